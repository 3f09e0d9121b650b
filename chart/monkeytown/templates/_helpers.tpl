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

{{/* monkeytown.secretName: the Secret holding github-token, redis-password and publish-token. */}}
{{- define "monkeytown.secretName" -}}
{{- default (include "monkeytown.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* monkeytown.redisHost: the in-chart Redis Service name. */}}
{{- define "monkeytown.redisHost" -}}
{{- include "monkeytown.componentName" (dict "ctx" . "component" "redis") -}}
{{- end -}}

{{/*
monkeytown.redisEnv: the env entries that give the event stream REDIS_URL. With in-chart Redis
and auth, REDIS_PASSWORD comes from the Secret and REDIS_URL expands it ($(REDIS_PASSWORD)), so
the password never appears in the pod spec.
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
{{- else if .Values.externalRedis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretUrlKey }}
{{- else if .Values.externalRedis.url }}
- name: REDIS_URL
  value: {{ .Values.externalRedis.url | quote }}
{{- else }}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret (the event stream needs a shared Redis)" }}
{{- end }}
{{- end -}}

{{/* monkeytown.eventStreamAutoscalingByChart: "true" when the chart renders the event-stream HPA/PDB. */}}
{{- define "monkeytown.eventStreamAutoscalingByChart" -}}
{{- $a := .Values.eventStream.autoscaling -}}
{{- if and $a.enabled (eq $a.managedBy "chart") -}}true{{- end -}}
{{- end -}}

{{/* monkeytown.checkValues: cross-field checks the schema cannot express. */}}
{{- define "monkeytown.checkValues" -}}
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
