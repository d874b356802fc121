{{/* Labels of every object of the release. */}}
{{- define "chat.labels" -}}
app.kubernetes.io/name: chat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The labels that select one role's pods: (dict "root" $ "role" "gateway"). */}}
{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: chat
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{/* The Secret every role reads its URLs and keys from: the chart's own or an existing one. */}}
{{- define "chat.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-secrets" .Release.Name) -}}
{{- end -}}

{{/* The pods' ServiceAccount: the release's own, or the one named, or the namespace's default. */}}
{{- define "chat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (printf "%s-chat" .Release.Name) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Key of the Secret holding a PEM public key for JWT, or nothing. */}}
{{- define "chat.jwtPublicKeyKey" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.auth.publicKeyFile -}}
{{- else if .Values.auth.publicKey -}}
jwt-public-key.pem
{{- end -}}
{{- end -}}

{{/* Key of the Secret holding a JWKS document, or nothing. */}}
{{- define "chat.jwksKey" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.auth.jwksFile -}}
{{- else if .Values.auth.jwks -}}
jwks.json
{{- end -}}
{{- end -}}

{{/* An environment variable from a key of the chat Secret: (dict "root" $ "name" "NATS_URL" "optional" false). */}}
{{- define "chat.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "chat.secretName" .root }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
A role's Deployment. Arguments (a dict):
  root      the chart's root context ($)
  role      gateway | persister | presence (the subcommand, container name and component label)
  values    the role's values (.Values.gateway, ...)
  replicas  replica count, or "" when an autoscaler owns it
  strategy  (optional) the Deployment strategy, as YAML
  env       (optional) role-specific environment entries, as YAML
  secretEnv names of the chat Secret's keys the role gets as environment variables
  initContainers, volumeMounts, volumes  (optional) as YAML
*/}}
{{- define "chat.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $root.Release.Name }}-{{ .role }}
  labels:
    {{- include "chat.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  {{- if ne (toString .replicas) "" }}
  replicas: {{ .replicas }}
  {{- end }}
  {{- with .strategy }}
  strategy:
    {{- . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "chat.selectorLabels" (dict "root" $root "role" .role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "chat.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .role }}
      annotations:
        # Roll the pods when their configuration or Secret changes.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.secret.existingSecret }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
    spec:
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      serviceAccountName: {{ include "chat.serviceAccountName" $root }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with .initContainers }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .role }}
          image: {{ include "chat.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .role | quote }}]
          ports:
            - { name: http, containerPort: {{ $v.port }} }
          envFrom:
            - configMapRef: { name: {{ $root.Release.Name }}-config }
          env:
            - name: PORT
              value: {{ $v.port | quote }}
            - name: OTEL_SERVICE_NAME
              value: chat-{{ .role }}
            {{- with $v.workerThreads }}
            - name: CHAT_WORKER_THREADS
              value: {{ . | int64 | quote }}
            {{- end }}
            {{- range .secretEnv }}
            {{- include "chat.secretEnv" (dict "root" $root "name" . "optional" (eq . "CHAT_JWT_SECRET")) | nindent 12 }}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
          readinessProbe:
            httpGet: { path: /readyz, port: http }
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            httpGet: { path: /healthz, port: http }
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 6
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - { name: tmp, mountPath: /tmp }
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: { sizeLimit: 64Mi }
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "chat.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A Service in front of one role's pods (its http port): (dict "root" $ "role" "persister" "port" 3000). */}}
{{- define "chat.roleService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .root.Release.Name }}-{{ .role }}
  labels:
    {{- include "chat.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  type: ClusterIP
  selector:
    {{- include "chat.selectorLabels" . | nindent 4 }}
  ports:
    - { name: http, port: {{ .port }}, targetPort: http }
{{- end -}}

{{/*
A PodDisruptionBudget keeping `values.pdb.minAvailable` pods of a role up, rendered only when
the role runs more than one replica (with one, it would block every node drain).
Arguments: root, role, values.
*/}}
{{- define "chat.pdb" -}}
{{- if gt (int .values.replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .root.Release.Name }}-{{ .role }}
  labels:
    {{- include "chat.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  minAvailable: {{ .values.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "chat.selectorLabels" (dict "root" .root "role" .role) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The persister's init container: applies the database migrations, then exits. */}}
{{- define "chat.migrateContainer" -}}
- name: migrate
  image: {{ include "chat.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["migrate"]
  envFrom:
    - configMapRef: { name: {{ .Release.Name }}-config }
  env:
    {{- include "chat.secretEnv" (dict "root" . "name" "DATABASE_URL") | nindent 4 }}
  resources:
    {{- toYaml .Values.persister.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
{{- end -}}
