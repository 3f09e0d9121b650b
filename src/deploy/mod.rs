//! `mt-stream deploy`: generates this pod's HorizontalPodAutoscaler and PodDisruptionBudget from
//! its budget and server-side-applies them (being built: see issue 4).

/// Flags of `mt-stream deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {}

/// Runs `mt-stream deploy`; returns the process exit code.
pub async fn run(_args: DeployArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("deploy is not built yet")
}
