{{/* The chart's name, shortened to the 63 characters a label value allows. */}}
{{- define "metricstream-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object the chart creates. */}}
{{- define "metricstream-operator.fullname" -}}
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

{{- define "metricstream-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metricstream-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The `helm test` pod's labels: the NetworkPolicy admits it by these. */}}
{{- define "metricstream-operator.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "metricstream-operator.name" . | trunc 58 | trimSuffix "-" }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metricstream-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "metricstream-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: metricstream
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "metricstream-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "metricstream-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference: the digest when given, else the tag (appVersion by default). */}}
{{- define "metricstream-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Leader election: asked for, or needed because more than one replica runs. */}}
{{- define "metricstream-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{/* The rules of the MetricStream controller, for a ClusterRole or a namespaced Role: exactly
     the access operator/src/rbac.rs lists (operator/tests/chart.rs compares them). Children are
     watched and listed for pruning (list, watch), server-side applied (patch, and create when
     the object does not exist yet) and pruned (delete); the operator never GETs them. To grant
     more (e.g. Strimzi KafkaUsers, Secrets), add a rule here and a row in rbac.rs. */}}
{{- define "metricstream-operator.streamRules" -}}
- apiGroups: [metricstream.dev]
  resources: [metricstreams]
  verbs: [list, watch, patch]
- apiGroups: [metricstream.dev]
  resources: [metricstreams/status]
  verbs: [patch]
# No request uses it: the OwnerReferencesPermissionEnforcement admission plugin demands it of
# whoever sets blockOwnerDeletion in an ownerReference to a MetricStream.
- apiGroups: [metricstream.dev]
  resources: [metricstreams/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps, services, persistentvolumeclaims]
  verbs: [list, watch, create, patch, delete]
# StatefulSets: the ingest of a stream that spills (its volume claims are the StatefulSet
# controller's; the operator never touches them).
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
# The workloads' pods, watched (selected by the managed-by label) so the status can say why a
# workload does not run: a crash loop, a missing image, an unschedulable pod. Never written.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# <stream>-kafka-credentials, the copy of a Strimzi user's password and cluster CA: applied,
# listed by label to prune, deleted; and the Kafka CA and password a stream names, read by name
# for the operator's own admin client. Never watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{- define "metricstream-operator.kafkaTopicRules" -}}
- apiGroups: [kafka.strimzi.io]
  resources: [kafkatopics]
  verbs: [list, watch, create, patch, delete]
# strimzi.createUser: the KafkaUser with the workloads' ACLs.
- apiGroups: [kafka.strimzi.io]
  resources: [kafkausers]
  verbs: [list, create, patch, delete]
{{- if .Values.rbac.strimziSecrets }}
# Read (by name only: no list, no watch) the Secrets Strimzi makes in the Kafka cluster's
# namespace — a created user's password and `<cluster>-cluster-ca-cert` — to copy them.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}

{{/* The label selector of the namespaces allowed to scrape, as JSON (the operator's
     --metrics-namespace-selector takes it as is). */}}
{{- define "metricstream-operator.metricsNamespaceSelector" -}}
{{- .Values.networkPolicy.metricsNamespaceSelector | default dict | toJson }}
{{- end }}
