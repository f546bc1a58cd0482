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

{{/* Where the serving certificate comes from: certManager, provided (tls.secretName) or
operator (the default: the operator issues its own CA and certificate). */}}
{{- define "rolecall.webhookCertSource" -}}
{{- if .Values.webhook.certManager.enabled }}certManager
{{- else if .Values.webhook.tls.secretName }}provided
{{- else }}operator
{{- end }}
{{- end }}

{{/* The Secret of the serving certificate. With the operator's own certificates its name
must stay "<Service name>-webhook-tls": the operator derives it from --webhook-service. */}}
{{- define "rolecall.webhookSecretName" -}}
{{- if eq (include "rolecall.webhookCertSource" .) "provided" }}
{{- .Values.webhook.tls.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "rolecall.fullname" .) }}
{{- end }}
{{- end }}

{{/* metadata.annotations and the initial failurePolicy of a webhook configuration. With the
operator's own certificates it starts as Ignore, without caBundle, and the operator sets
caBundle and then the wanted policy (the annotation) once a replica answers: a fresh install
never blocks writes. */}}
{{- define "rolecall.webhookAnnotations" -}}
{{- $source := include "rolecall.webhookCertSource" .root }}
{{- if eq $source "certManager" }}
annotations:
  # cert-manager's cainjector writes the serving certificate's CA into caBundle.
  cert-manager.io/inject-ca-from: {{ .root.Release.Namespace }}/{{ include "rolecall.certificateName" .root }}
{{- else if eq $source "operator" }}
annotations:
  # The operator writes caBundle and then sets failurePolicy to this value (webhookcerts.py).
  rolecall.dev/failure-policy: {{ .policy }}
{{- end }}
{{- end }}

{{/* On an upgrade the configuration already exists and the operator owns its failurePolicy
(server-side apply would answer a conflict if helm applied another value): keep the current
value; the operator moves it to the annotation's once a replica of the new release answers. */}}
{{- define "rolecall.webhookFailurePolicy" -}}
{{- if eq (include "rolecall.webhookCertSource" .root) "operator" }}
{{- $current := lookup "admissionregistration.k8s.io/v1" .kind "" (include "rolecall.webhookConfigName" .root) }}
{{- $hooks := dig "webhooks" (list) ($current | default dict) }}
{{- $policy := "" }}
{{- if $hooks }}{{ $policy = (index $hooks 0).failurePolicy | default "" }}{{ end }}
{{- $policy | default "Ignore" }}
{{- else }}{{ .policy }}
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
{{- if and (eq (include "rolecall.webhookCertSource" .root) "provided") .root.Values.webhook.tls.caBundle }}
caBundle: {{ .root.Values.webhook.tls.caBundle }}
{{- end }}
{{- end }}
