{{/* NetworkPolicy egress rules shared by the gateway and router policies. */}}
{{- define "wsfleet.np.dns" -}}
# DNS, wherever the cluster runs it.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}
{{- define "wsfleet.np.nats" -}}
{{- if .Values.nats.deploy -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "wsfleet.selectorLabels" (dict "root" . "component" "nats") | nindent 10 }}
  ports:
    - port: {{ .Values.nats.ports.client }}
      protocol: TCP
{{- else -}}
- {{- with .Values.networkPolicy.natsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- range .Values.networkPolicy.natsPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}

{{- define "wsfleet.np.jwks" -}}
# The JWKS URL (auth.jwt.jwksURL): networkPolicy.jwksTo, on jwksPorts.
- {{- with .Values.networkPolicy.jwksTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    {{- range .Values.networkPolicy.jwksPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}
