{{- define "chat.labels" -}}
app.kubernetes.io/name: chat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Environment shared by every role. */}}
{{- define "chat.env" -}}
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: CHAT_SUBJECT_PREFIX
  value: {{ .Values.subjectPrefix | quote }}
- name: CHAT_PARTITIONS
  value: {{ .Values.partitions | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* A role's health probes on its /healthz. */}}
{{- define "chat.probes" -}}
readinessProbe:
  httpGet: { path: /healthz, port: http }
  periodSeconds: 5
livenessProbe:
  httpGet: { path: /healthz, port: http }
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}
