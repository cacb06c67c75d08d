{{/*
Expand the name of the chart.
*/}}
{{- define "uaip-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "uaip-hub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "uaip-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "uaip-hub.labels" -}}
helm.sh/chart: {{ include "uaip-hub.chart" . }}
{{ include "uaip-hub.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: uaip-hub
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "uaip-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "uaip-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component labels: call with (dict "ctx" $ "component" "api").
*/}}
{{- define "uaip-hub.componentLabels" -}}
{{ include "uaip-hub.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "uaip-hub.componentSelectorLabels" -}}
{{ include "uaip-hub.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "uaip-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "uaip-hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference (digest wins over tag; tag defaults to appVersion).
*/}}
{{- define "uaip-hub.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the pods read DATABASE_URL, REDIS_URL, NATS_URL, JWT_SECRET
(and the bootstrap client) from: the user's existingSecret or the chart's own.
*/}}
{{- define "uaip-hub.secretName" -}}
{{- default (include "uaip-hub.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Secret the migration hook reads. A pre-install hook runs before the release's
ordinary resources exist, so it cannot use the chart's own Secret: the chart
renders a copy of the same data as a hook Secret with a lower hook weight
(templates/migration-secret.yaml). An existingSecret already exists, so it is
used directly.
*/}}
{{- define "uaip-hub.migrationSecretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-migrate" (include "uaip-hub.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
ConfigMap data: the non-secret settings of the configuration table (docs/api.md).
One helper renders the ConfigMap, the checksum/config annotation and the
migration Job's inline env, so they can never disagree (Grafana style).
*/}}
{{- define "uaip-hub.configData" -}}
SERVER_HOST: "0.0.0.0"
SERVER_PORT: {{ .Values.containerPort | quote }}
{{- range $key, $value := .Values.config }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{ $key }}: {{ $value | int64 | toString | quote }}
{{- else }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Secret data (base64), rendered only when no existingSecret is given.
Empty optional values (REDIS_URL, bootstrap client) are left out so the app
sees them unset, as docs/api.md defines.
*/}}
{{- define "uaip-hub.secretData" -}}
{{- $s := .Values.secrets -}}
DATABASE_URL: {{ required "secrets.databaseUrl is required (or set secrets.existingSecret)" $s.databaseUrl | b64enc | quote }}
NATS_URL: {{ required "secrets.natsUrl is required (or set secrets.existingSecret)" $s.natsUrl | b64enc | quote }}
JWT_SECRET: {{ required "secrets.jwtSecret is required (or set secrets.existingSecret); generate one with: openssl rand -base64 48" $s.jwtSecret | b64enc | quote }}
{{- with $s.redisUrl }}
REDIS_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.jwtPreviousSecrets }}
JWT_PREVIOUS_SECRETS: {{ . | b64enc | quote }}
{{- end }}
{{- if or $s.bootstrapClientId $s.bootstrapClientSecret }}
UAIP_BOOTSTRAP_CLIENT_ID: {{ required "secrets.bootstrapClientId is required with secrets.bootstrapClientSecret" $s.bootstrapClientId | b64enc | quote }}
UAIP_BOOTSTRAP_CLIENT_SECRET: {{ required "secrets.bootstrapClientSecret is required with secrets.bootstrapClientId" $s.bootstrapClientSecret | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Checksum of whatever the pods read from the Secret. With an existingSecret the
chart cannot see its content; the name is hashed so switching secrets rolls pods.
*/}}
{{- define "uaip-hub.secretChecksum" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret | sha256sum }}
{{- else }}
{{- include "uaip-hub.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds for the API pods: preStop sleep (readiness turns
503 and the endpoints drop the pod) + gunicorn's graceful timeout + a margin.
*/}}
{{- define "uaip-hub.apiTerminationGracePeriod" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.config.GRACEFUL_TIMEOUT_SECONDS) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
Pod-level and container-level security contexts shared by every workload.
*/}}
{{- define "uaip-hub.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "uaip-hub.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Environment of every app container: ConfigMap + Secret (names as in docs/api.md).
*/}}
{{- define "uaip-hub.envFrom" -}}
- configMapRef:
    name: {{ include "uaip-hub.fullname" . }}
- secretRef:
    name: {{ include "uaip-hub.secretName" . }}
{{- end }}

{{/*
The /tmp emptyDir (the only writable place; drain file and Prometheus
multiprocess directory live there).
*/}}
{{- define "uaip-hub.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{/*
The migration container, used by the hook Job and by the optional init container.
Call with (dict "ctx" $ "secretName" NAME). Settings come inline from the same
helper as the ConfigMap, because a pre-install hook runs before the ConfigMap exists.
*/}}
{{- define "uaip-hub.migrateContainer" -}}
{{- $ctx := .ctx -}}
- name: migrate
  image: {{ include "uaip-hub.image" $ctx }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  command: ["uaip-hub", "migrate"]
  securityContext:
    {{- include "uaip-hub.securityContext" $ctx | nindent 4 }}
  env:
    {{- range $key, $value := (include "uaip-hub.configData" $ctx | fromYaml) }}
    - name: {{ $key }}
      value: {{ $value | quote }}
    {{- end }}
  envFrom:
    - secretRef:
        name: {{ .secretName }}
  resources:
    {{- toYaml $ctx.Values.migrations.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
The drain file the preStop hook creates and readiness watches (UAIP_DRAIN_FILE).
*/}}
{{- define "uaip-hub.drainFile" -}}
{{- default "/tmp/uaip-draining" .Values.config.UAIP_DRAIN_FILE }}
{{- end }}

{{/*
The NATS auth callout settings (docs/nats-security.md) from `natsAuthCallout`, seeds from existing Secrets;
nothing when it is off.
*/}}
{{- define "uaip-hub.natsCalloutEnv" -}}
{{- $c := .Values.natsAuthCallout -}}
{{- if $c.enabled }}
- name: NATS_AUTH_CALLOUT
  value: "true"
- name: NATS_CALLOUT_ACCOUNT
  value: {{ $c.account | quote }}
- name: NATS_CALLOUT_ISSUER_SEED
  valueFrom:
    secretKeyRef:
      name: {{ required "natsAuthCallout.issuerSeedSecret.name is required when natsAuthCallout.enabled (a Secret holding the account seed from `uaip-hub nats-keys`)" $c.issuerSeedSecret.name }}
      key: {{ $c.issuerSeedSecret.key }}
{{- with $c.xkeySeedSecret.name }}
- name: NATS_CALLOUT_XKEY_SEED
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $c.xkeySeedSecret.key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Container env of the API or relay: `fixed` (EnvVar list the chart sets), then the callout settings, then the `otel` map, then the
component's extraEnv. A name in extraEnv wins over the same name in `otel` (no duplicate names are rendered).
Call with (dict "ctx" $ "fixed" LIST "extraEnv" LIST).
*/}}
{{- define "uaip-hub.containerEnv" -}}
{{- $names := list -}}
{{- range .extraEnv }}{{ $names = append $names .name }}{{ end -}}
{{- range .fixed }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- include "uaip-hub.natsCalloutEnv" .ctx }}
{{- range $name, $value := .ctx.Values.otel }}
{{- if not (has $name $names) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Whether the relay serves metrics that the chart can scrape and alert on.
*/}}
{{- define "uaip-hub.relayMetrics" -}}
{{- if and .Values.relay.enabled .Values.relay.metricsPort }}true{{ end }}
{{- end }}

{{/*
PromQL label matchers selecting this release's series: the release namespace and the jobs of the chart's
ServiceMonitors (a job is named after its Service), unless metrics.prometheusRule.selector says otherwise.
*/}}
{{- define "uaip-hub.ruleSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- $fullname := include "uaip-hub.fullname" . | regexQuoteMeta | replace "\\" "\\\\" }}
{{- printf "namespace=%q, job=~\"%s|%s-relay\"" .Release.Namespace $fullname $fullname }}
{{- end }}
{{- end }}

{{/*
Base URL of the runbook (docs/runbook.md); alerts append #<alert name in lower case>.
*/}}
{{- define "uaip-hub.runbookUrl" -}}
{{- default (printf "%s/blob/main/docs/runbook.md" (trimSuffix "/" .Chart.Home)) .Values.metrics.prometheusRule.runbookUrl }}
{{- end }}

{{/*
The common part of an alerting rule: `for`, labels (severity + alertLabels) and the annotations block opened with
runbook_url (the caller adds summary and description). Call with (dict "ctx" $ "name" NAME "alert" ALERT_VALUES
"runbook" BASE_URL "labels" ALERT_LABELS).
*/}}
{{- define "uaip-hub.alertMeta" -}}
for: {{ .alert.for }}
labels:
  severity: {{ .alert.severity | quote }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  runbook_url: {{ printf "%s#%s" .runbook (lower .name) | quote }}
{{- end }}
