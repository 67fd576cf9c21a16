{{/* Chart name, overridable. */}}
{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, at most 63 characters. */}}
{{- define "tern.fullname" -}}
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

{{- define "tern.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "tern.commonLabels" -}}
helm.sh/chart: {{ include "tern.chart" . }}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the broker's objects. */}}
{{- define "tern.labels" -}}
{{ include "tern.commonLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{/* Labels of the `helm test` pod: not selected by the Service or the PDB. */}}
{{- define "tern.testLabels" -}}
{{ include "tern.commonLabels" . }}
app.kubernetes.io/component: test
{{- end }}

{{/* Labels that select the broker pods (Deployment, Service, PodDisruptionBudget). */}}
{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "tern.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tern.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tern.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Settings the chart refuses before anything reaches the cluster. */}}
{{- define "tern.validate" -}}
{{- $tls := .Values.security.tls }}
{{- if and $tls.enabled (not $tls.secretName) (not $tls.certManager.enabled) }}
{{- fail "security.tls.enabled needs security.tls.secretName or security.tls.certManager.enabled" }}
{{- end }}
{{- if and (or $tls.clientAuth $tls.http $tls.certManager.enabled) (not $tls.enabled) }}
{{- fail "security.tls.clientAuth, .http and .certManager need security.tls.enabled" }}
{{- end }}
{{- if and $tls.certManager.enabled (not $tls.certManager.issuerRef.name) }}
{{- fail "security.tls.certManager.enabled needs security.tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.security.auth.enabled (not .Values.security.auth.secretName) }}
{{- fail "security.auth.enabled needs security.auth.secretName (a Secret with the key auth.toml)" }}
{{- end }}
{{- if and .Values.security.auth.enabled .Values.tests.enabled (not .Values.security.auth.testToken.secretName) }}
{{- fail "with security.auth.enabled, the helm test needs security.auth.testToken.secretName (or tests.enabled=false)" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.broker.shutdownGraceSecs) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than broker.shutdownGraceSecs (%v), or Kubernetes kills the broker mid-drain" .Values.terminationGracePeriodSeconds .Values.broker.shutdownGraceSecs) }}
{{- end }}
{{- end }}

{{/* The Secret holding the protocol listener's certificate. */}}
{{- define "tern.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "tern.fullname" .)) .Values.security.tls.secretName -}}
{{- end }}
