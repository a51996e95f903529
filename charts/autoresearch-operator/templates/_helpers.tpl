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
An image reference from one entry of .Values.images: repository@digest when the digest is set
(the tag is then ignored), else repository:tag.
*/}}
{{- define "autoresearch-operator.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/*
The trainer image reference.
*/}}
{{- define "autoresearch-operator.trainerImage" -}}
{{- include "autoresearch-operator.image" .Values.images.trainer }}
{{- end }}

{{/*
What the operator gives an org for every field its spec leaves out (AUTORESEARCH_ORG_DEFAULTS),
as JSON: a partial ResearchOrg spec. NOTES.txt's starter org is printed from it too.
*/}}
{{- define "autoresearch-operator.orgDefaults" -}}
{{- $resources := deepCopy .Values.trainer.resources }}
{{- $limits := default (dict) $resources.limits }}
{{- $_ := set $limits .Values.trainer.gpuResourceName (int64 .Values.trainer.gpusPerExperiment) }}
{{- $_ := set $resources "limits" $limits }}
{{- $trainer := dict
      "image" (include "autoresearch-operator.trainerImage" .)
      "timeBudgetSeconds" (int64 .Values.trainer.timeBudgetSeconds)
      "resources" $resources }}
{{- with .Values.trainer.queueName }}
{{- $_ := set $trainer "queueName" . }}
{{- end }}
{{- $proposer := dict "model" .Values.llm.model }}
{{- with .Values.llm.baseURL }}
{{- $_ := set $proposer "baseURL" . }}
{{- end }}
{{- $budget := dict "maxExperiments" (int64 .Values.budget.maxExperiments) }}
{{- if gt (float64 .Values.budget.maxGPUHours) 0.0 }}
{{- $_ := set $budget "maxGPUHours" .Values.budget.maxGPUHours }}
{{- end }}
{{- if gt (int64 .Values.budget.maxLLMTokens) 0 }}
{{- $_ := set $budget "maxLLMTokens" (int64 .Values.budget.maxLLMTokens) }}
{{- end }}
{{- dict "trainer" $trainer "proposer" $proposer "budget" $budget | toJson }}
{{- end }}

{{/*
Hosts the operator may send a Secret's value to (AUTORESEARCH_SECRET_HOSTS): security.secretHosts
and always the LLM endpoint's host (with its port, if the URL names one).
*/}}
{{- define "autoresearch-operator.secretHosts" -}}
{{- $llmHost := "api.openai.com" }}
{{- with .Values.llm.baseURL }}
{{- $llmHost = (urlParse .).host }}
{{- end }}
{{- append .Values.security.secretHosts $llmHost | uniq | join "," }}
{{- end }}

{{/*
The operator's RBAC rules, for the ClusterRole (every namespace) and for each Role (watched
namespaces): one list, so they cannot drift. Exactly the calls the operator makes; identical to
deploy/rbac.yaml's, which the cluster tests run the operator with (tests/chart/test_chart_rbac.py).
*/}}
{{- define "autoresearch-operator.rules" -}}
# kopf watches the orgs, and patches their finalizer and its own bookkeeping annotations.
# A contest creates its orgs (owned by it: the garbage collector deletes them with it) and
# patches one that left the contest's terms back onto them; it never deletes one.
- apiGroups: ["autoresearch.dev"]
  resources: ["researchorgs"]
  verbs: ["get", "list", "watch", "patch", "create"]
# status.phase, counts, best/baseline...
- apiGroups: ["autoresearch.dev"]
  resources: ["researchorgs/status"]
  verbs: ["patch"]
# kopf watches the contests, and patches their finalizer and its bookkeeping annotations.
- apiGroups: ["autoresearch.dev"]
  resources: ["researchcontests"]
  verbs: ["get", "list", "watch", "patch"]
# status.round, standings, leader...
- apiGroups: ["autoresearch.dev"]
  resources: ["researchcontests/status"]
  verbs: ["patch"]
# The contest owns its orgs with blockOwnerDeletion; where the API server enforces
# OwnerReferencesPermissionEnforcement, setting that needs update on the owner's finalizers.
- apiGroups: ["autoresearch.dev"]
  resources: ["researchcontests/finalizers"]
  verbs: ["update"]
# One Job per experiment, one prepare Job; a Job left over from a reset history is deleted.
# One list and watch per namespace (k8s/informer.py) tells every org when its runs finish.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# A finished Job's pods say how it ended: one list and watch per namespace (k8s/informer.py),
# a direct list when that watch is behind; the train container's log shows progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# The candidate train.py travels in a ConfigMap; spec.programRef is read from one.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get"]
# The LLM API key and the git push credential (apiKeySecretRef, credentialsSecretRef); the
# operator sends a value only to the hosts AUTORESEARCH_SECRET_HOSTS allows, never into a pod.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events on the orgs and contests (ours and kopf's).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The deny-all NetworkPolicy around experiment pods, created once in each served namespace
# (networkPolicy.enabled); never updated or deleted.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
{{- end }}
