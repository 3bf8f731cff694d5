{{- define "kassa.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kassa.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kassa.labels" -}}
app.kubernetes.io/name: {{ include "kassa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kassa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kassa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kassa.secretName" -}}
{{- default (include "kassa.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The migrate hook's Secret: the user's, or the chart's hook copy (secret.yaml). */}}
{{- define "kassa.migrateSecretName" -}}
{{- default (printf "%s-migrate" (include "kassa.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "kassa.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The chart refuses values that cannot run, before anything is installed. */}}
{{- define "kassa.validate" -}}
{{- $v := .Values -}}
{{- if not $v.config.gateway -}}
{{- fail "set config.gateway: stripe, http://your-gateway:port, or sandbox with replicaCount=1 (a trial: payments are simulated)" -}}
{{- end -}}
{{- if and (eq $v.config.gateway "sandbox") (or (gt (int $v.replicaCount) 1) $v.autoscaling.enabled) -}}
{{- fail "config.gateway=sandbox runs with replicaCount=1 and autoscaling.enabled=false only: the sandbox keeps its payments in its pod, so a payment page or webhook reaching another pod would not find the payment. Use a real gateway (stripe, http://...) for several replicas" -}}
{{- end -}}
{{- if not $v.secrets.existingSecret -}}
{{- if or (not $v.secrets.jwtSecret) (not $v.secrets.webhookSecret) -}}
{{- fail "set secrets.jwtSecret and secrets.webhookSecret, or secrets.existingSecret: Kassa refuses to run in production without them" -}}
{{- end -}}
{{- if ne (not $v.config.smtpUser) (not $v.secrets.smtpPassword) -}}
{{- fail "set config.smtpUser and secrets.smtpPassword together, or neither" -}}
{{- end -}}
{{- if ne (not $v.scylla.username) (not $v.secrets.scyllaPassword) -}}
{{- fail "set scylla.username and secrets.scyllaPassword together, or neither" -}}
{{- end -}}
{{- if and (eq $v.config.gateway "stripe") (or (not $v.secrets.stripeApiKey) (not $v.secrets.stripeWebhookSecret)) -}}
{{- fail "config.gateway=stripe needs secrets.stripeApiKey and secrets.stripeWebhookSecret" -}}
{{- end -}}
{{- end -}}
{{- if and $v.scylla.tls.enabled (not $v.scylla.tls.caSecret) -}}
{{- fail "scylla.tls.enabled needs scylla.tls.caSecret: the Secret holding the CA certificate that signed the nodes' certificates" -}}
{{- end -}}
{{- if contains "@" $v.config.store -}}
{{- fail "config.store must not carry credentials (they would be in the pod spec): set scylla.username and secrets.scyllaPassword" -}}
{{- end -}}
{{- end -}}

{{/* The chart's Secret data: one definition for the release's Secret and the migrate hook's. */}}
{{- define "kassa.secretData" -}}
KASSA_JWT_SECRET: {{ .Values.secrets.jwtSecret | quote }}
KASSA_WEBHOOK_SECRET: {{ .Values.secrets.webhookSecret | quote }}
{{- with .Values.secrets.smtpPassword }}
KASSA_SMTP_PASSWORD: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.scyllaPassword }}
KASSA_SCYLLA_PASSWORD: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.stripeApiKey }}
KASSA_STRIPE_API_KEY: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.stripeWebhookSecret }}
KASSA_STRIPE_WEBHOOK_SECRET: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "kassa.caDir" -}}/etc/kassa/scylla-ca{{- end -}}

{{/* The volumes of the server and the migration job: the data dir, the ScyllaDB CA. */}}
{{- define "kassa.volumes" -}}
- name: data
  emptyDir: {}
{{- if .Values.scylla.tls.enabled }}
- name: scylla-ca
  secret:
    secretName: {{ .Values.scylla.tls.caSecret }}
    items:
      - key: {{ .Values.scylla.tls.caKey }}
        path: {{ .Values.scylla.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "kassa.volumeMounts" -}}
- name: data
  mountPath: /var/lib/kassa
{{- if .Values.scylla.tls.enabled }}
- name: scylla-ca
  mountPath: {{ include "kassa.caDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The KASSA_* environment shared by the server and the migration job, whose secrets come
     from the Secret named secretName (the release's, the hook's or the user's). */}}
{{- define "kassa.env" -}}
{{- $secret := .secretName -}}
{{- with .root -}}
- name: KASSA_ENV
  value: production
- name: KASSA_LISTEN
  value: "0.0.0.0:8080"
- name: KASSA_PUBLIC_URL
  value: {{ .Values.config.publicUrl | quote }}
{{- with .Values.config.storefrontUrl }}
- name: KASSA_STOREFRONT_URL
  value: {{ . | quote }}
{{- end }}
- name: KASSA_STORE
  value: {{ .Values.config.store | quote }}
{{- with .Values.scylla.username }}
- name: KASSA_SCYLLA_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .Values.scylla.tls.enabled }}
- name: KASSA_SCYLLA_TLS_CA
  value: {{ printf "%s/%s" (include "kassa.caDir" .) .Values.scylla.tls.caKey | quote }}
{{- with .Values.scylla.tls.serverName }}
- name: KASSA_SCYLLA_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.scylla.replication }}
- name: KASSA_SCYLLA_REPLICATION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.scylla.localDc }}
- name: KASSA_SCYLLA_LOCAL_DC
  value: {{ . | quote }}
{{- end }}
- name: KASSA_DATA_DIR
  value: /var/lib/kassa
- name: KASSA_GATEWAY
  value: {{ .Values.config.gateway | quote }}
- name: KASSA_SMTP_URL
  value: {{ .Values.config.smtpUrl | quote }}
{{- with .Values.config.smtpUser }}
- name: KASSA_SMTP_USER
  value: {{ . | quote }}
{{- end }}
- name: KASSA_MAIL_FROM
  value: {{ .Values.config.mailFrom | quote }}
- name: KASSA_RESERVATION_TTL
  value: {{ .Values.config.reservationTtl | quote }}
- name: KASSA_SHUTDOWN_DELAY
  value: {{ .Values.config.shutdownDelay | quote }}
- name: KASSA_MAX_LIVE_ACTORS
  value: {{ .Values.config.maxLiveActors | quote }}
- name: KASSA_LOG
  value: {{ .Values.config.log | quote }}
- name: KASSA_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- with .Values.config.jwtIssuer }}
- name: KASSA_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.jwtAudience }}
- name: KASSA_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := .Values.config.extraEnv }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
- name: KASSA_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_JWT_SECRET
- name: KASSA_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_WEBHOOK_SECRET
{{- /* A password whose user is set must be in the Secret: a missing key stops the pod
       with the key's name instead of Kassa starting without it. */}}
- name: KASSA_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_SMTP_PASSWORD
      optional: {{ not .Values.config.smtpUser }}
- name: KASSA_SCYLLA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_SCYLLA_PASSWORD
      optional: {{ not .Values.scylla.username }}
- name: KASSA_STRIPE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_STRIPE_API_KEY
      optional: {{ ne .Values.config.gateway "stripe" }}
- name: KASSA_STRIPE_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: KASSA_STRIPE_WEBHOOK_SECRET
      optional: {{ ne .Values.config.gateway "stripe" }}
{{- end -}}
{{- end -}}
