{{/* Names, labels and computed values shared by every template. */}}

{{- define "rolecall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rolecall.fullname" -}}
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

{{- define "rolecall.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rolecall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rolecall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rolecall.labels" -}}
helm.sh/chart: {{ include "rolecall.chart" . }}
{{ include "rolecall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rolecall
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rolecall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rolecall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rolecall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "rolecall.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* The Lease that elects the one active replica. */}}
{{- define "rolecall.leaseName" -}}
{{- printf "%s-leader" (include "rolecall.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The webhook configurations kopf would manage itself (the operator's default name). */}}
{{- define "rolecall.kopfWebhookConfigName" -}}
rolecall.dev
{{- end }}

{{- define "rolecall.webhookConfigName" -}}
{{- include "rolecall.fullname" . }}
{{- end }}

{{- define "rolecall.webhookSecretName" -}}
{{- if .Values.webhook.certManager.enabled }}
{{- printf "%s-webhook-tls" (include "rolecall.fullname" .) }}
{{- else }}
{{- required "webhook.enabled needs a serving certificate: set webhook.certManager.enabled=true or webhook.tls.secretName" .Values.webhook.tls.secretName }}
{{- end }}
{{- end }}

{{- define "rolecall.certificateName" -}}
{{- printf "%s-webhook" (include "rolecall.fullname" .) }}
{{- end }}

{{/* clientConfig of both webhook configurations; the paths are the operator's handler ids. */}}
{{- define "rolecall.webhookClientConfig" -}}
service:
  name: {{ include "rolecall.fullname" .root }}
  namespace: {{ .root.Release.Namespace }}
  port: 443
  path: {{ .path }}
{{- if and (not .root.Values.webhook.certManager.enabled) .root.Values.webhook.tls.caBundle }}
caBundle: {{ .root.Values.webhook.tls.caBundle }}
{{- end }}
{{- end }}
