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

{{- define "kassa.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The KASSA_* environment shared by the server and the migration job. */}}
{{- define "kassa.env" -}}
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
- name: KASSA_DATA_DIR
  value: /var/lib/kassa
- name: KASSA_GATEWAY
  value: {{ .Values.config.gateway | quote }}
- name: KASSA_SMTP_URL
  value: {{ .Values.config.smtpUrl | quote }}
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
      name: {{ include "kassa.secretName" . }}
      key: KASSA_JWT_SECRET
- name: KASSA_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "kassa.secretName" . }}
      key: KASSA_WEBHOOK_SECRET
- name: KASSA_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kassa.secretName" . }}
      key: KASSA_SMTP_PASSWORD
      optional: true
- name: KASSA_STRIPE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kassa.secretName" . }}
      key: KASSA_STRIPE_API_KEY
      optional: true
- name: KASSA_STRIPE_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "kassa.secretName" . }}
      key: KASSA_STRIPE_WEBHOOK_SECRET
      optional: true
{{- end -}}
