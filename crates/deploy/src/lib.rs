//! `mt-stream deploy`: generates this pod's HorizontalPodAutoscaler and PodDisruptionBudget from
//! its [`Budget`] and server-side-applies them, prints them (`--print`) or asks the API server
//! for a dry run (`--dry-run`).
//!
//! - [`profile`]: the per-environment numbers and the budget-derived targets;
//! - [`objects`]: pure builders of the typed objects and their YAML;
//! - [`apply`]: the kube client, server-side apply and the error classes.
//!
//! Exit codes (one per error class, also in `docs/deploy.md`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (warnings, e.g. the target Deployment missing, go to stderr) |
//! | 1 | anything else (unexpected API error, cannot write the output) |
//! | 2 | bad flags or an incoherent budget (clap's usage errors are 2 too) |
//! | 3 | no usable kubeconfig (nor in-cluster service account) |
//! | 4 | API server unreachable |
//! | 5 | unauthorized (401) or RBAC refused (403) |
//! | 6 | namespace missing |
//! | 7 | API version not served (`autoscaling/v2` or `policy/v1`) |
//! | 8 | server-side apply conflict (rerun with `--force-conflicts`) |

pub mod apply;
pub mod objects;
pub mod profile;

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use mt_budget::{Budget, BudgetError, ByteSize, DEFAULT_MAX_CONNECTIONS};

pub use apply::{ApplyError, ApplyOptions, FIELD_MANAGER};
pub use objects::{Objects, Settings};
pub use profile::{Environment, Profile, Targets};

/// Flags of `mt-stream deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Environment whose profile, release and namespace to use.
    #[arg(long, value_enum)]
    pub env: Environment,

    /// Helm release name (the `app.kubernetes.io/instance` label) (default: `monkeytown-<env>`).
    #[arg(long)]
    pub release: Option<String>,

    /// Namespace to apply into (default: `monkeytown-<env>`).
    #[arg(long)]
    pub namespace: Option<String>,

    /// Kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else the in-cluster account].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current context].
    #[arg(long)]
    pub context: Option<String>,

    /// Print the objects as YAML to stdout and touch no cluster.
    #[arg(long, conflicts_with_all = ["dry_run", "force_conflicts"])]
    pub print: bool,

    /// Ask the API server for a server-side dry run (dryRun=All); nothing is persisted.
    #[arg(long)]
    pub dry_run: bool,

    /// Take ownership of fields another field manager holds (as kubectl --force-conflicts).
    #[arg(long)]
    pub force_conflicts: bool,

    /// Also scale on the mt_stream_connections Pods metric (needs a custom-metrics adapter).
    #[arg(long)]
    pub connections_metric: bool,

    /// Connections per pod (the budget the targets derive from).
    #[arg(long, env = "MT_MAX_CONNECTIONS", default_value_t = NonZeroUsize::new(DEFAULT_MAX_CONNECTIONS).expect("non-zero default"))]
    pub max_connections: NonZeroUsize,

    /// The pod's memory limit, e.g. 1Gi. deploy describes the pod, not this machine, so it
    /// never reads the local cgroup.
    #[arg(long, env = "MT_MEMORY_LIMIT", default_value = "1Gi")]
    pub memory_limit: ByteSize,
}

/// Why `deploy` failed; [`DeployError::exit_code`] gives each class its code.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid budget: {0}")]
    Budget(#[from] BudgetError),

    #[error("invalid --{flag} {value:?}: {rule}")]
    InvalidName { flag: &'static str, value: String, rule: &'static str },

    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_norway::Error),

    #[error("cannot write to stdout: {0}")]
    Output(#[from] std::io::Error),

    /// Boxed: API errors carry the kube error and the operation, and are the rare path.
    #[error(transparent)]
    Apply(Box<ApplyError>),
}

impl From<ApplyError> for DeployError {
    fn from(error: ApplyError) -> Self {
        DeployError::Apply(Box::new(error))
    }
}

impl DeployError {
    /// The process exit code of this error class (table in the module doc).
    pub fn exit_code(&self) -> u8 {
        match self {
            DeployError::Yaml(_) | DeployError::Output(_) => 1,
            DeployError::Budget(_) | DeployError::InvalidName { .. } => 2,
            DeployError::Apply(error) => match **error {
                ApplyError::NoKubeconfig { .. } | ApplyError::Kubeconfig { .. } | ApplyError::Client { .. } => 3,
                ApplyError::Unreachable { .. } => 4,
                ApplyError::Unauthorized { .. } | ApplyError::Forbidden { .. } => 5,
                ApplyError::NamespaceMissing { .. } => 6,
                ApplyError::NotServed { .. } => 7,
                ApplyError::Conflict { .. } => 8,
                ApplyError::Api { .. } => 1,
            },
        }
    }
}

impl DeployArgs {
    /// The release: `--release`, else `monkeytown-<env>`.
    pub fn release(&self) -> String {
        self.release.clone().unwrap_or_else(|| format!("monkeytown-{}", self.env))
    }

    /// The namespace: `--namespace`, else `monkeytown-<env>`.
    pub fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| format!("monkeytown-{}", self.env))
    }

    /// Checks the flags and turns them into build settings.
    pub fn settings(&self) -> Result<Settings, DeployError> {
        let budget =
            Budget { max_connections: self.max_connections, memory_limit: self.memory_limit, ..Budget::default() };
        budget.validate()?;
        let release = self.release();
        // Helm release names are DNS-1123 labels of at most 53 characters; the name is also a
        // label value, so it must be one.
        check_dns_label("release", &release, 53)?;
        check_dns_label("namespace", &self.namespace(), 63)?;
        Ok(Settings { environment: self.env, release, budget, connections_metric: self.connections_metric })
    }
}

fn check_dns_label(flag: &'static str, value: &str, max: usize) -> Result<(), DeployError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= max
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        let rule = if max == 53 {
            "lower-case letters, digits and '-', starting and ending alphanumeric, at most 53 characters"
        } else {
            "lower-case letters, digits and '-', starting and ending alphanumeric, at most 63 characters"
        };
        Err(DeployError::InvalidName { flag, value: value.to_owned(), rule })
    }
}

/// Runs `mt-stream deploy`; returns the process exit code. Errors are printed here, on one
/// line, because each class has its own exit code.
pub async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    match execute(&args).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("mt-stream deploy: error: {error}");
            Ok(ExitCode::from(error.exit_code()))
        }
    }
}

async fn execute(args: &DeployArgs) -> Result<(), DeployError> {
    let settings = args.settings()?;
    let objects = Objects::build(&settings);
    if args.print {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(objects.to_yaml()?.as_bytes())?;
        stdout.flush()?;
        return Ok(());
    }
    let client = apply::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let options = ApplyOptions { dry_run: args.dry_run, force_conflicts: args.force_conflicts };
    let report = apply::apply(&client, &args.namespace(), &objects, options).await?;
    for applied in &report.applied {
        println!("{applied}");
    }
    for warning in &report.warnings {
        eprintln!("mt-stream deploy: warning: {warning}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("deploy").chain(args.iter().copied())).map(|cli| cli.deploy)
    }

    /// Release and namespace default to monkeytown-<env>; the budget to 1000 / 1Gi.
    #[test]
    fn defaults_follow_the_environment() {
        let args = parse(&["--env", "prod"]).expect("parses");
        assert_eq!(args.release(), "monkeytown-prod");
        assert_eq!(args.namespace(), "monkeytown-prod");
        let settings = args.settings().expect("valid");
        assert_eq!(settings.budget, Budget::default());
        assert!(!settings.connections_metric);
    }

    /// Budget flags feed the settings; an incoherent budget is a usage error (exit 2).
    #[test]
    fn budget_flags_are_checked() {
        let args = parse(&["--env", "dev", "--max-connections", "2000", "--memory-limit", "2Gi"]).expect("parses");
        let settings = args.settings().expect("valid");
        assert_eq!(settings.budget.memory_limit, ByteSize(2 << 30));
        let args = parse(&["--env", "dev", "--max-connections", "100000"]).expect("parses");
        let error = args.settings().expect_err("overcommitted");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().starts_with("invalid budget: "), "{error}");
    }

    /// A release or namespace that is not a DNS label is refused with exit code 2.
    #[test]
    fn names_must_be_dns_labels() {
        for bad in [&["--release", "Bad_Name"][..], &["--namespace=-x"], &["--release", &"a".repeat(54)]] {
            let mut argv = vec!["--env", "dev"];
            argv.extend_from_slice(bad);
            let error = parse(&argv).expect("parses").settings().expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{error}");
        }
        parse(&["--env", "dev", "--release", "mt-canary-2"]).expect("parses").settings().expect("valid");
    }

    /// --print cannot be combined with the flags that only make sense against a cluster.
    #[test]
    fn print_excludes_cluster_flags() {
        assert!(parse(&["--env", "dev", "--print", "--dry-run"]).is_err());
        assert!(parse(&["--env", "dev", "--print", "--force-conflicts"]).is_err());
        assert!(parse(&["--env", "dev"]).is_ok());
        assert!(parse(&[]).is_err(), "--env is required");
    }
}
