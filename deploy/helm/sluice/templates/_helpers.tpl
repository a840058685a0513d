{{/* Labels every object of the release carries. */}}
{{- define "sluice.labels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/* The image reference: repository:tag, and @digest when one is given. */}}
{{- define "sluice.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository $tag }}
{{- end -}}
{{- end -}}

{{/* Environment that points Sluice's pods at the API server directly, when asked to. */}}
{{- define "sluice.apiEnv" -}}
{{- if .Values.kubernetesAPI.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.kubernetesAPI.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubernetesAPI.port | quote }}
{{- end }}
{{- end -}}
