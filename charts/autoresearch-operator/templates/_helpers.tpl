{{/*
Expand the name of the chart.
*/}}
{{- define "autoresearch-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (the DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "autoresearch-operator.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "autoresearch-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "autoresearch-operator.labels" -}}
helm.sh/chart: {{ include "autoresearch-operator.chart" . }}
{{ include "autoresearch-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: autoresearch
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "autoresearch-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autoresearch-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the ServiceAccount to use.
*/}}
{{- define "autoresearch-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "autoresearch-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The data claim every experiment pod mounts (AUTORESEARCH_DATA_CLAIM).
*/}}
{{- define "autoresearch-operator.dataClaimName" -}}
{{- default (printf "%s-data" (include "autoresearch-operator.fullname" .)) .Values.persistence.data.claimName }}
{{- end }}

{{/*
The trainer image reference.
*/}}
{{- define "autoresearch-operator.trainerImage" -}}
{{- printf "%s:%s" .Values.images.trainer.repository .Values.images.trainer.tag }}
{{- end }}
