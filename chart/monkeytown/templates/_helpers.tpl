{{/*
Shared helpers. The names and labels here are a contract: `mt-stream deploy` builds the same
event-stream HPA/PDB names and selector labels (see docs/scaling-profiles.md).
*/}}

{{/* monkeytown.name: the chart name, or nameOverride. */}}
{{- define "monkeytown.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* monkeytown.fullname: `<name>-<environment>` (e.g. monkeytown-prod), or fullnameOverride. */}}
{{- define "monkeytown.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" (include "monkeytown.name" .) .Values.environment | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* monkeytown.componentName: `<fullname>-<component>`. Call with (dict "ctx" $ "component" "web"). */}}
{{- define "monkeytown.componentName" -}}
{{- printf "%s-%s" (include "monkeytown.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* monkeytown.chart: the helm.sh/chart label value. */}}
{{- define "monkeytown.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
monkeytown.selectorLabels: labels that never change for a component; used in selectors.
Call with (dict "ctx" $ "component" "event-stream").
*/}}
{{- define "monkeytown.selectorLabels" -}}
app.kubernetes.io/name: {{ include "monkeytown.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
monkeytown.labels: the common labels of every object, plus the component's selector labels
when a component is given. Call with (dict "ctx" $ "component" "web") or (dict "ctx" $).
*/}}
{{- define "monkeytown.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "monkeytown.chart" $ctx }}
app.kubernetes.io/name: {{ include "monkeytown.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
monkeytown.image: `[registry/]repository(:tag|@digest)`. Call with (dict "ctx" $ "image" .Values.web.image).
The component's registry wins over the global imageRegistry; the tag defaults to appVersion.
*/}}
{{- define "monkeytown.image" -}}
{{- $registry := default .ctx.Values.imageRegistry .image.registry -}}
{{- $ref := .image.repository -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) $ref -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .ctx.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.secretName: the Secret holding github-token, redis-password, publish-token,
auth-hmac-secret, auth-public-keys.jwks and github-webhook-secret.
*/}}
{{- define "monkeytown.secretName" -}}
{{- default (include "monkeytown.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* monkeytown.redisHost: the in-chart Redis Service name. */}}
{{- define "monkeytown.redisHost" -}}
{{- include "monkeytown.componentName" (dict "ctx" . "component" "redis") -}}
{{- end -}}

{{/*
monkeytown.redisEnv: the env entries that give the event stream REDIS_URL and what goes with it.
With in-chart Redis and auth, REDIS_PASSWORD comes from the Secret and REDIS_URL expands it
($(REDIS_PASSWORD)), so the password never appears in the pod spec. With externalRedis:
REDIS_USERNAME (a plain value), REDIS_PASSWORD (a secretKeyRef to password.existingSecret), the
URL (a value, or a secretKeyRef to existingSecret) and MT_REDIS_CA_FILE (the file of the mounted
tls.caSecret, see monkeytown.redisCaMounted).
*/}}
{{- define "monkeytown.redisEnv" -}}
{{- if .Values.redis.enabled -}}
{{- if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "monkeytown.secretName" . }}
      key: redis-password
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d" (include "monkeytown.redisHost" .) (int .Values.redis.service.port) | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "redis://%s:%d" (include "monkeytown.redisHost" .) (int .Values.redis.service.port) | quote }}
{{- end }}
{{- else -}}
{{- $ext := .Values.externalRedis }}
{{- with $ext.username }}
- name: REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- with $ext.password }}
{{- if .existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if $ext.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret }}
      key: {{ $ext.existingSecretUrlKey }}
{{- else if $ext.url }}
- name: REDIS_URL
  value: {{ $ext.url | quote }}
{{- else }}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret (the event stream needs a shared Redis)" }}
{{- end }}
{{- if include "monkeytown.redisCaMounted" . }}
- name: MT_REDIS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "monkeytown.redisCaDir" .) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
monkeytown.redisCaMounted: "true" when the event stream gets the CA file of externalRedis.tls
(MT_REDIS_CA_FILE): redis.enabled is false and externalRedis.tls.caSecret is set.
*/}}
{{- define "monkeytown.redisCaMounted" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls .Values.externalRedis.tls.caSecret -}}true{{- end -}}
{{- end -}}

{{/* monkeytown.redisCaDir: where the externalRedis.tls.caSecret volume is mounted (a directory, no subPath). */}}
{{- define "monkeytown.redisCaDir" -}}
/etc/mt-stream/redis-ca
{{- end -}}

{{/*
monkeytown.checkRedisValues: the externalRedis checks (only when redis.enabled is false, since
externalRedis is ignored otherwise). The scheme check repeats the schema's pattern for
--skip-schema-validation; the others are rules the hub applies at start-up, refused here at
render time instead: a Sentinel URL must name the primary (sentinelServiceName), and a CA
(tls.caSecret, MT_REDIS_CA_FILE) needs a TLS URL. A URL kept in existingSecret is not known
here, so only externalRedis.url is checked. The URL is never printed (it may hold a password).
*/}}
{{- define "monkeytown.checkRedisValues" -}}
{{- $ext := .Values.externalRedis -}}
{{- if and (not .Values.redis.enabled) (not $ext.existingSecret) $ext.url -}}
{{- $url := trim (toString $ext.url) -}}
{{- $scheme := "" -}}
{{- if contains "://" $url -}}
{{- $scheme = lower (index (splitList "://" $url) 0) -}}
{{- end -}}
{{- if not (has $scheme (list "redis" "rediss" "redis-cluster" "rediss-cluster" "redis-sentinel" "rediss-sentinel")) -}}
{{- fail "externalRedis.url: expected a redis://, rediss://, redis-cluster://, rediss-cluster://, redis-sentinel:// or rediss-sentinel:// URL" -}}
{{- end -}}
{{- if and (hasSuffix "-sentinel" $scheme) (not (contains "sentinelServiceName=" $url)) -}}
{{- fail "externalRedis.url: a redis-sentinel:// or rediss-sentinel:// URL needs ?sentinelServiceName=<the primary's name>" -}}
{{- end -}}
{{- if and $ext.tls $ext.tls.caSecret (not (has $scheme (list "rediss" "rediss-cluster" "rediss-sentinel"))) -}}
{{- fail (printf "externalRedis.tls.caSecret (%s) needs a TLS externalRedis.url: rediss://, rediss-cluster:// or rediss-sentinel://, not %s:// (the hub refuses MT_REDIS_CA_FILE without TLS)" $ext.tls.caSecret $scheme) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.authPublicKeysMounted: "true" when the event stream gets a public keys file
(MT_AUTH_PUBLIC_KEYS_FILE): the chart's Secret holds secret.authPublicKeysJwks, or
secret.existingSecret provides the key (eventStream.auth.publicKeysFromExistingSecret).
*/}}
{{- define "monkeytown.authPublicKeysMounted" -}}
{{- if .Values.secret.existingSecret -}}
{{- if .Values.eventStream.auth.publicKeysFromExistingSecret -}}true{{- end -}}
{{- else if .Values.secret.authPublicKeysJwks -}}true{{- end -}}
{{- end -}}

{{/*
monkeytown.checkAuthValues: the token settings' checks. The schema makes the first two already
(they stay for --skip-schema-validation); the others are cross-field rules. A key value set
together with secret.existingSecret would be ignored (the chart renders no Secret) and leave
every channel public, so it is refused instead. The HMAC secret itself is never printed.
*/}}
{{- define "monkeytown.checkAuthValues" -}}
{{- $auth := .Values.eventStream.auth -}}
{{- $secret := .Values.secret -}}
{{- $hmac := $secret.authHmacSecret | default "" | toString -}}
{{- if and $hmac (lt (len $hmac) 32) -}}
{{- fail (printf "secret.authHmacSecret must be at least 32 bytes (got %d): the hub refuses a shorter MT_AUTH_HMAC_SECRET; e.g. openssl rand -hex 32" (len $hmac)) -}}
{{- end -}}
{{- if not (kindIs "slice" $auth.publicChannels) -}}
{{- fail "eventStream.auth.publicChannels must be a list of channel patterns, e.g. [builds, \"town:*\"]" -}}
{{- end -}}
{{- range $auth.publicChannels -}}
{{- if not (regexMatch "^([A-Za-z0-9_.:-]{1,128}|[A-Za-z0-9_.:-]{0,127}[*])$" (toString .)) -}}
{{- fail (printf "eventStream.auth.publicChannels: %q is not a channel pattern: use a channel name ([A-Za-z0-9_.:-], 1 to 128 characters) or a prefix ending in *" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- with $secret.authPublicKeysJwks -}}
{{- $jwks := fromJson (toString .) -}}
{{- if or (hasKey $jwks "Error") (not (kindIs "slice" (get $jwks "keys"))) (empty (get $jwks "keys")) -}}
{{- fail (printf "secret.authPublicKeysJwks is not a JWKS: expected a JSON object with a non-empty \"keys\" list%s" (ternary (printf " (%v)" (get $jwks "Error")) "" (hasKey $jwks "Error"))) -}}
{{- end -}}
{{- end -}}
{{- if $secret.existingSecret -}}
{{- if $hmac -}}
{{- fail (printf "secret.authHmacSecret is ignored with secret.existingSecret: put the HMAC secret in Secret %s under the key auth-hmac-secret" $secret.existingSecret) -}}
{{- end -}}
{{- if $secret.authPublicKeysJwks -}}
{{- fail (printf "secret.authPublicKeysJwks is ignored with secret.existingSecret: put the JWKS in Secret %s under the key auth-public-keys.jwks and set eventStream.auth.publicKeysFromExistingSecret=true" $secret.existingSecret) -}}
{{- end -}}
{{- else if $auth.publicKeysFromExistingSecret -}}
{{- fail "eventStream.auth.publicKeysFromExistingSecret needs secret.existingSecret; with the chart's Secret, set secret.authPublicKeysJwks instead" -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.checkGithubValues: the GitHub source's checks. The schema makes the per-value ones
already (they stay for --skip-schema-validation, as the hub would refuse the same values at
start-up); a webhook secret set together with secret.existingSecret would be ignored (the chart
renders no Secret) and leave the webhook route off, so it is refused instead. The webhook secret
itself is never printed.
*/}}
{{- define "monkeytown.checkGithubValues" -}}
{{- $gh := .Values.eventStream.github -}}
{{- $secret := .Values.secret -}}
{{- $webhookSecret := $secret.githubWebhookSecret | default "" | toString -}}
{{- if and $webhookSecret (lt (len $webhookSecret) 16) -}}
{{- fail (printf "secret.githubWebhookSecret must be at least 16 bytes (got %d): the hub refuses a shorter MT_GITHUB_WEBHOOK_SECRET; e.g. openssl rand -hex 32" (len $webhookSecret)) -}}
{{- end -}}
{{- if and $webhookSecret $secret.existingSecret -}}
{{- fail (printf "secret.githubWebhookSecret is ignored with secret.existingSecret: put the webhook secret in Secret %s under the key github-webhook-secret" $secret.existingSecret) -}}
{{- end -}}
{{- if not (kindIs "slice" $gh.repos) -}}
{{- fail "eventStream.github.repos must be a list of owner/repo or organisation names, e.g. [Monkeytown/web, acme]" -}}
{{- end -}}
{{- range $gh.repos -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$" (toString .)) -}}
{{- fail (printf "eventStream.github.repos: %q is not owner/repo or an organisation name (letters, digits, . _ -)" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^(https?://.+)?$" (toString $gh.apiUrl)) -}}
{{- fail (printf "eventStream.github.apiUrl %q: expected an http:// or https:// URL (GitHub Enterprise Server: https://HOST/api/v3), or empty for https://api.github.com" (toString $gh.apiUrl)) -}}
{{- end -}}
{{- if lt (int64 $gh.leaseSeconds) 3 -}}
{{- fail (printf "eventStream.github.leaseSeconds must be at least 3 (got %d): the lease is renewed every third of it (MT_GITHUB_LEASE_SECONDS)" (int64 $gh.leaseSeconds)) -}}
{{- end -}}
{{- if lt (int64 $gh.webhookSilenceSeconds) 1 -}}
{{- fail (printf "eventStream.github.webhookSilenceSeconds must be at least 1 (got %d) (MT_GITHUB_WEBHOOK_SILENCE_SECONDS)" (int64 $gh.webhookSilenceSeconds)) -}}
{{- end -}}
{{- end -}}

{{/* monkeytown.eventStreamAutoscalingByChart: "true" when the chart renders the event-stream HPA/PDB. */}}
{{- define "monkeytown.eventStreamAutoscalingByChart" -}}
{{- $a := .Values.eventStream.autoscaling -}}
{{- if and $a.enabled (eq $a.managedBy "chart") -}}true{{- end -}}
{{- end -}}

{{/*
monkeytown.eventStreamTargetMemory: the event-stream HPA's memory target (AverageValue).
eventStream.autoscaling.targetMemory when set; else 75% of eventStream.resources.limits.memory
(the pod budget's memory limit), computed and written exactly as `mt-stream deploy
--memory-limit` does (crates/deploy/src/profile.rs Targets::from_budget, and ByteSize's Display
in crates/budget/src/lib.rs): rounded down, at least 1 byte, in the largest of Gi/Mi/Ki that
divides it, else in bytes. 1Gi -> 768Mi.
*/}}
{{- define "monkeytown.eventStreamTargetMemory" -}}
{{- $a := .Values.eventStream.autoscaling -}}
{{- if $a.targetMemory -}}
{{- $a.targetMemory -}}
{{- else -}}
{{- $limit := toString .Values.eventStream.resources.limits.memory -}}
{{- $re := "^0*([0-9]+)(Ki|Mi|Gi)?$" -}}
{{- if not (regexMatch $re $limit) -}}
{{- fail (printf "eventStream.resources.limits.memory %q: expected bytes or an integer with Ki, Mi or Gi (or set eventStream.autoscaling.targetMemory)" $limit) -}}
{{- end -}}
{{- $number := regexReplaceAll $re $limit "${1}" | int64 -}}
{{- $suffix := regexReplaceAll $re $limit "${2}" -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 -}}
{{- $bytes := mul $number (get $units $suffix | default 1) -}}
{{- $target := add (mul (div $bytes 100) 75) (div (mul (mod $bytes 100) 75) 100) | max 1 -}}
{{- if eq (mod $target 1073741824) 0 -}}
{{- printf "%dGi" (div $target 1073741824) -}}
{{- else if eq (mod $target 1048576) 0 -}}
{{- printf "%dMi" (div $target 1048576) -}}
{{- else if eq (mod $target 1024) 0 -}}
{{- printf "%dKi" (div $target 1024) -}}
{{- else -}}
{{- printf "%d" $target -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.eventStreamTargetConnections: the connections metric's AverageValue, 70% of
eventStream.ws.maxConnections rounded down and at least 1, as `mt-stream deploy
--max-connections` computes it. 1000 -> 700.
*/}}
{{- define "monkeytown.eventStreamTargetConnections" -}}
{{- div (mul (int64 .Values.eventStream.ws.maxConnections) 70) 100 | max 1 | toString -}}
{{- end -}}

{{/*
monkeytown.checkRenamedValues: refuses to render when a renamed value is set under its old key,
with a message naming the new key, e.g. "eventStream.ws.heartbeatInterval was renamed to
eventStream.ws.heartbeatIntervalMs (milliseconds)", so an old values file or --set fails loudly
instead of being ignored. The table below is every rename: [old key, new key, unit].
values.schema.json lists each old key too, with this same message as its only allowed value
(`const`), so schema validation (helm lint, template, install, upgrade) already refuses it with
"value must be '<this message>'" instead of a bare "additional properties" error; this check
refuses it when schema validation is skipped (--skip-schema-validation). The chart tests keep
the two messages identical.
*/}}
{{- define "monkeytown.checkRenamedValues" -}}
{{- $renamed := list
  (list "eventStream.ws.heartbeatInterval" "eventStream.ws.heartbeatIntervalMs" "milliseconds")
-}}
{{- range $renamed -}}
{{- $old := index . 0 -}}
{{- $node := $.Values -}}
{{- $found := true -}}
{{- range splitList "." $old -}}
{{- if and $found (kindIs "map" $node) (hasKey $node .) -}}
{{- $node = index $node . -}}
{{- else -}}
{{- $found = false -}}
{{- end -}}
{{- end -}}
{{- if $found -}}
{{- fail (printf "%s was renamed to %s (%s)" $old (index . 1) (index . 2)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.checkValues: checks the schema cannot express (renamed keys, cross-field rules).
deployment-event-stream.yaml calls it; it renders nothing.
*/}}
{{- define "monkeytown.checkValues" -}}
{{- include "monkeytown.checkRenamedValues" . -}}
{{- include "monkeytown.checkAuthValues" . -}}
{{- include "monkeytown.checkGithubValues" . -}}
{{- include "monkeytown.checkRedisValues" . -}}
{{- $es := .Values.eventStream -}}
{{- if le (int $es.terminationGracePeriodSeconds) (add $es.preStopSleepSeconds $es.drainSeconds | int) -}}
{{- fail (printf "eventStream.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + drainSeconds (%d)" (int $es.terminationGracePeriodSeconds) (add $es.preStopSleepSeconds $es.drainSeconds | int)) -}}
{{- end -}}
{{- if gt (int $es.autoscaling.minReplicas) (int $es.autoscaling.maxReplicas) -}}
{{- fail "eventStream.autoscaling.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if gt (int .Values.web.autoscaling.minReplicas) (int .Values.web.autoscaling.maxReplicas) -}}
{{- fail "web.autoscaling.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- end -}}

{{/*
monkeytown.eventStreamMemoryLimitBytes: eventStream.resources.limits.memory in bytes, for the
memory alert (files/alerts.yaml): bytes or an integer with Ki, Mi or Gi, the forms
values.schema.json allows (this check is for --skip-schema-validation).
*/}}
{{- define "monkeytown.eventStreamMemoryLimitBytes" -}}
{{- $limit := toString .Values.eventStream.resources.limits.memory -}}
{{- $re := "^0*([0-9]+)(Ki|Mi|Gi)?$" -}}
{{- if not (regexMatch $re $limit) -}}
{{- fail (printf "eventStream.resources.limits.memory %q: the memory alert (eventStream.monitoring.prometheusRule) needs bytes or an integer with Ki, Mi or Gi" $limit) -}}
{{- end -}}
{{- $number := regexReplaceAll $re $limit "${1}" | int64 -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 -}}
{{- mul $number (get $units (regexReplaceAll $re $limit "${2}") | default 1) | toString -}}
{{- end -}}

{{/*
monkeytown.eventStreamSeriesSelector: the PromQL label matchers that select this release's
event-stream pods, in the mt_stream_* series of the ServiceMonitor's scrapes (or of pod
annotations) and in the kubelet's cAdvisor series: the release namespace, and pod names of the
event-stream Deployment (`<deployment>-<pod-template-hash>-<suffix>`).
*/}}
{{- define "monkeytown.eventStreamSeriesSelector" -}}
{{- $deployment := include "monkeytown.componentName" (dict "ctx" . "component" "event-stream") -}}
{{- printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" $deployment) -}}
{{- end -}}
