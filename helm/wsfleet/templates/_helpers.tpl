{{/* Names */}}
{{- define "wsfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wsfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component>, 63 bytes at most. */}}
{{- define "wsfleet.componentName" -}}
{{- printf "%s-%s" (include "wsfleet.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "wsfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: include with (dict "root" $ "component" "gateway"). */}}
{{- define "wsfleet.labels" -}}
helm.sh/chart: {{ include "wsfleet.chart" .root }}
{{ include "wsfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: wsfleet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "wsfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wsfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wsfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: include with (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "wsfleet.image" -}}
{{- $registry := default .root.Values.image.registry (get .image "registry") -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) (get .image "tag") -}}
{{- $ref := .image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if get .image "digest" -}}
{{- printf "%s@%s" $ref (get .image "digest") -}}
{{- else -}}
{{- printf "%s:%s" $ref (toString $tag) -}}
{{- end -}}
{{- end -}}

{{- define "wsfleet.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
A Go duration ("30s", "1m30s", "500ms") in seconds, as a float. Rendering
fails on anything else.
*/}}
{{- define "wsfleet.seconds" -}}
{{- $s := toString . -}}
{{- $parts := regexFindAll "[0-9]*\\.?[0-9]+(ns|us|µs|ms|h|m|s)" $s -1 -}}
{{- if or (eq (len $parts) 0) (ne (join "" $parts) $s) -}}
{{- fail (printf "%q is not a Go duration such as 30s, 1m30s or 500ms" $s) -}}
{{- end -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range $parts -}}
{{- $num := regexFind "^[0-9]*\\.?[0-9]+" . -}}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* A value as an environment variable's text: whole numbers without an exponent, lists comma-joined. */}}
{{- define "wsfleet.envValue" -}}
{{- $v := . -}}
{{- if kindIs "float64" $v -}}
{{- if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end -}}
{{- else if kindIs "slice" $v -}}
{{- join "," $v -}}
{{- else -}}
{{- toString $v -}}
{{- end -}}
{{- end -}}

{{/*
A size in bytes: a whole number, or digits with a unit as nats-server reads
them: K, M, G, T (powers of 1000), Ki, KiB, KB ... (powers of 1024), so
"1Gi" is 1073741824 and "1G" 1000000000. Rendering fails on anything else.
*/}}
{{- define "wsfleet.bytes" -}}
{{- $v := . -}}
{{- if kindIs "float64" $v -}}
{{- if ne $v (floor $v) }}{{ fail (printf "%v is not a whole number of bytes" $v) }}{{ end -}}
{{- int64 $v -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- int64 $v -}}
{{- else -}}
{{- $s := toString $v -}}
{{- if not (regexMatch "^[0-9]+([KMGTkmgt]([Ii]?[Bb]?))?$" $s) -}}
{{- fail (printf "%q is not a size such as 1073741824, 512Mi or 1Gi" $s) -}}
{{- end -}}
{{- $digits := regexFind "^[0-9]+" $s -}}
{{- $units := dict "" 1 "k" 1000 "m" 1000000 "g" 1000000000 "t" 1000000000000 "ki" 1024 "kib" 1024 "kb" 1024 "mi" 1048576 "mib" 1048576 "mb" 1048576 "gi" 1073741824 "gib" 1073741824 "gb" 1073741824 "ti" 1099511627776 "tib" 1099511627776 "tb" 1099511627776 -}}
{{- mul (int64 $digits) (get $units (lower (trimPrefix $digits $s))) -}}
{{- end -}}
{{- end -}}

{{/*
The history stream's replica count (--history-replicas): resume.history.replicas,
or by default 3 on the bundled NATS cluster of 3 servers or more (one
server's loss keeps a quorum), else 1.
*/}}
{{- define "wsfleet.history.replicas" -}}
{{- $r := .Values.resume.history.replicas -}}
{{- if not (kindIs "invalid" $r) -}}
{{- int $r -}}
{{- else if and .Values.nats.deploy (ge (int .Values.nats.replicas) 3) -}}
3
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/*
Resumable delivery, as ConfigMap entries: the one place both the gateways'
and the routers' settings come from. They are the shared variables
(WSFLEET_RESUME, WSFLEET_HISTORY_*), which every fleet binary with the flag
reads: the history stream's settings must be the same for all of them (a
gateway or router finding the stream with other settings refuses to start).
*/}}
{{- define "wsfleet.historyEnv" -}}
# Resumable delivery (resume.*), the same for the gateways and the routers.
WSFLEET_RESUME: {{ ternary "true" "false" .Values.resume.enabled | quote }}
{{- if .Values.resume.enabled }}
{{- $h := .Values.resume.history }}
WSFLEET_HISTORY_TTL: {{ $h.ttl | quote }}
WSFLEET_HISTORY_MAX_PER_USER: {{ include "wsfleet.envValue" $h.maxPerUser | quote }}
WSFLEET_HISTORY_MAX_BYTES: {{ include "wsfleet.bytes" $h.maxBytes | quote }}
WSFLEET_HISTORY_REPLICAS: {{ include "wsfleet.history.replicas" . | quote }}
WSFLEET_HISTORY_STORAGE: {{ $h.storage | quote }}
{{- end }}
{{- end -}}

{{/* The NATS servers every gateway and router uses (--nats-url). */}}
{{- define "wsfleet.natsURL" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{- printf "nats://%s:%d" (include "wsfleet.componentName" (dict "root" . "component" "nats")) (int .Values.nats.ports.client) -}}
{{- end -}}
{{- end -}}

{{/* The shortest grace period the gateway's drain fits in, in whole seconds. */}}
{{- define "wsfleet.gateway.minGrace" -}}
{{- $d := .Values.gateway.drain -}}
{{- $sum := addf (float64 $d.preStopSleepSeconds) (include "wsfleet.seconds" $d.timeout | float64) (include "wsfleet.seconds" $d.closeTimeout | float64) (float64 $d.marginSeconds) -}}
{{- ceil $sum | int -}}
{{- end -}}

{{/* The preStop hook's bound: its delay, the drain and the close timeout,
and a second; the drain ends by then, so the hook never eats the NATS
drain's share of the grace period. */}}
{{- define "wsfleet.gateway.hookTimeout" -}}
{{- $d := .Values.gateway.drain -}}
{{- ceil (addf (float64 $d.preStopSleepSeconds) (include "wsfleet.seconds" $d.timeout | float64) (include "wsfleet.seconds" $d.closeTimeout | float64) 1.0) | int -}}
{{- end -}}

{{- define "wsfleet.gateway.grace" -}}
{{- $min := include "wsfleet.gateway.minGrace" . | int -}}
{{- $set := .Values.gateway.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $min -}}
{{- else if lt (int $set) $min -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%d) is shorter than the drain needs: preStopSleepSeconds (%v) + drain.timeout (%s) + drain.closeTimeout (%s) + marginSeconds (%v) = %d" (int $set) .Values.gateway.drain.preStopSleepSeconds .Values.gateway.drain.timeout .Values.gateway.drain.closeTimeout .Values.gateway.drain.marginSeconds $min) -}}
{{- else -}}
{{- int $set -}}
{{- end -}}
{{- end -}}

{{/* Secrets */}}
{{- define "wsfleet.jwtSecretName" -}}
{{- default (include "wsfleet.componentName" (dict "root" . "component" "jwt")) .Values.auth.jwt.existingSecret -}}
{{- end -}}

{{/* Whether the gateways get an HS256 secret, and from which Secret key. */}}
{{- define "wsfleet.jwtHS256Key" -}}
{{- if .Values.auth.jwt.existingSecret -}}
{{- .Values.auth.jwt.existingSecretHS256Key -}}
{{- else if or .Values.auth.jwt.hs256Secret (not (or .Values.auth.jwt.jwksURL .Values.auth.jwt.jwks)) -}}
hs256-secret
{{- end -}}
{{- end -}}

{{- define "wsfleet.jwtJWKSKey" -}}
{{- if .Values.auth.jwt.existingSecret -}}
{{- .Values.auth.jwt.existingSecretJWKSKey -}}
{{- else if .Values.auth.jwt.jwks -}}
jwks.json
{{- end -}}
{{- end -}}

{{- define "wsfleet.apiKeySecretName" -}}
{{- default (include "wsfleet.componentName" (dict "root" . "component" "router")) .Values.router.apiKeys.existingSecret -}}
{{- end -}}

{{- define "wsfleet.apiKeySecretKey" -}}
{{- if .Values.router.apiKeys.existingSecret -}}
{{- .Values.router.apiKeys.existingSecretKey -}}
{{- else -}}
api-keys
{{- end -}}
{{- end -}}

{{/* One API key alone (the chart's Secret keeps the first as api-key-0). */}}
{{- define "wsfleet.testAPIKeyKey" -}}
{{- if .Values.router.apiKeys.existingSecret -}}
{{- .Values.router.apiKeys.existingSecretKey -}}
{{- else -}}
api-key-0
{{- end -}}
{{- end -}}

{{/*
An existing Secret's entry (base64) when the release is upgraded, so a value
generated on install stays the same: (dict "root" $ "name" "..." "key" "...").
*/}}
{{- define "wsfleet.existingSecretValue" -}}
{{- $s := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $s $s.data -}}
{{- index $s.data .key | default "" -}}
{{- end -}}
{{- end -}}

{{/* The PromQL matchers selecting the gateways' series. */}}
{{- define "wsfleet.metricsSelector" -}}
{{- if .Values.metrics.selector -}}
{{- .Values.metrics.selector -}}
{{- else -}}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "wsfleet.componentName" (dict "root" . "component" "gateway-metrics")) -}}
{{- end -}}
{{- end -}}

{{/*
Settings the chart manages itself; gateway.config and router.config must not
set them.
*/}}
{{- define "wsfleet.gateway.reserved" -}}
listen admin-listen control-socket nats-url subject-prefix nats-embedded-listen nats-embedded-store-dir node-id drain-timeout close-timeout max-connections jwt-hs256-secret jwt-jwks-url jwt-jwks-file resume history-ttl history-max-per-user history-max-bytes history-replicas history-storage
{{- end -}}

{{- define "wsfleet.router.reserved" -}}
listen admin-listen nats-url subject-prefix api-key jwt-hs256-secret jwt-jwks-url jwt-jwks-file resume history-ttl history-max-per-user history-max-bytes history-replicas history-storage
{{- end -}}

{{/*
Resumable delivery's checks: the history stream must fit the bundled NATS
servers, or the gateways and routers would refuse to start (JetStream
refuses a stream it cannot place).
*/}}
{{- define "wsfleet.validateResume" -}}
{{- if .Values.resume.enabled -}}
{{- $h := .Values.resume.history -}}
{{- if lt (include "wsfleet.seconds" $h.ttl | float64) 1.0 -}}
{{- fail (printf "resume.history.ttl %s: at least 1s" $h.ttl) -}}
{{- end -}}
{{- $maxBytes := include "wsfleet.bytes" $h.maxBytes | int64 -}}
{{- if lt $maxBytes 1048576 -}}
{{- fail (printf "resume.history.maxBytes %v: at least 1Mi" $h.maxBytes) -}}
{{- end -}}
{{- $replicas := include "wsfleet.history.replicas" . | int -}}
{{- if .Values.nats.deploy -}}
{{- $js := .Values.nats.jetstream -}}
{{- if not $js.enabled -}}
{{- fail "resume.enabled needs JetStream on the bundled NATS: set nats.jetstream.enabled=true (or resume.enabled=false); the gateways and routers refuse to start without it" -}}
{{- end -}}
{{- if gt $replicas (int .Values.nats.replicas) -}}
{{- fail (printf "resume.history.replicas %d is more than the NATS servers (nats.replicas %d): each replica needs a server of its own" $replicas (int .Values.nats.replicas)) -}}
{{- end -}}
{{- /* Each server holding a replica holds all of the stream; a fifth of its store stays for JetStream's own state and logs and the routers' idempotency keys. */ -}}
{{- if eq $h.storage "file" -}}
{{- if not $js.fileStore.enabled -}}
{{- fail "resume.history.storage file needs nats.jetstream.fileStore.enabled (a volume per NATS server), or set resume.history.storage=memory" -}}
{{- end -}}
{{- if gt (mul $maxBytes 5) (mul (include "wsfleet.bytes" $js.fileStore.size | int64) 4) -}}
{{- fail (printf "resume.history.maxBytes %v is more than 80%% of nats.jetstream.fileStore.size %s, each NATS server's volume: every replica holds the whole stream, and JetStream needs the rest for its own logs" $h.maxBytes $js.fileStore.size) -}}
{{- end -}}
{{- else if gt (mul $maxBytes 5) (mul (include "wsfleet.bytes" $js.memoryStore | int64) 4) -}}
{{- fail (printf "resume.history.maxBytes %v is more than 80%% of nats.jetstream.memoryStore %v, each NATS server's JetStream memory: every replica holds the whole stream, and the routers' idempotency keys need the rest" $h.maxBytes $js.memoryStore) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks on values that the schema cannot express. Rendered by the gateway ConfigMap. */}}
{{- define "wsfleet.validate" -}}
{{- if and .Values.nats.url .Values.nats.deploy -}}
{{- fail "set either nats.url (an existing NATS) or nats.deploy=true (the bundled cluster), not both" -}}
{{- end -}}
{{- if not (or .Values.nats.url .Values.nats.deploy) -}}
{{- fail "the gateways need NATS: set nats.url to your NATS servers or nats.deploy=true (the chart never runs the gateway's embedded NATS server)" -}}
{{- end -}}
{{- range $k, $_ := .Values.gateway.config -}}
{{- if has $k (splitList " " (include "wsfleet.gateway.reserved" $)) -}}
{{- fail (printf "gateway.config.%s is set by the chart; use the chart's own value for it (see values.yaml%s)" $k (ternary ": resume.*" "" (or (eq $k "resume") (hasPrefix "history-" $k)))) -}}
{{- end -}}
{{- end -}}
{{- range $k, $_ := .Values.router.config -}}
{{- if has $k (splitList " " (include "wsfleet.router.reserved" $)) -}}
{{- fail (printf "router.config.%s is set by the chart; use the chart's own value for it (see values.yaml%s)" $k (ternary ": resume.*" "" (or (eq $k "resume") (hasPrefix "history-" $k)))) -}}
{{- end -}}
{{- end -}}
{{- include "wsfleet.validateResume" . -}}
{{- if and .Values.auth.jwt.existingSecret (not (or .Values.auth.jwt.existingSecretHS256Key .Values.auth.jwt.existingSecretJWKSKey .Values.auth.jwt.jwksURL)) -}}
{{- fail "auth.jwt.existingSecret needs existingSecretHS256Key or existingSecretJWKSKey (or set auth.jwt.jwksURL)" -}}
{{- end -}}
{{- if hasPrefix "http://" .Values.auth.jwt.jwksURL -}}
{{- if not (index .Values.gateway.config "jwt-jwks-allow-http") -}}
{{- fail "auth.jwt.jwksURL is plain http: keys fetched without TLS can be replaced on the way; use an https URL, or set gateway.config.jwt-jwks-allow-http: true for development" -}}
{{- end -}}
{{- if and .Values.router.useGatewayJWTKeys (not (index .Values.router.config "jwt-jwks-allow-http")) -}}
{{- fail "auth.jwt.jwksURL is plain http and router.useGatewayJWTKeys is set: use an https URL, or set router.config.jwt-jwks-allow-http: true for development" -}}
{{- end -}}
{{- end -}}
{{- with .Values.auth.jwt.hs256Secret -}}
{{- if lt (len .) 32 -}}
{{- fail "auth.jwt.hs256Secret must be at least 32 bytes" -}}
{{- end -}}
{{- end -}}
{{- range .Values.router.apiKeys.keys -}}
{{- if lt (len .) 16 -}}
{{- fail "router.apiKeys.keys: each key must be at least 16 bytes" -}}
{{- end -}}
{{- if regexMatch "[^!-+--~]" . -}}
{{- fail "router.apiKeys.keys: keys are printable ASCII without spaces or commas" -}}
{{- end -}}
{{- end -}}
{{- $hb := include "wsfleet.seconds" (default "30s" (index .Values.gateway.config "heartbeat")) | float64 -}}
{{- $idle := include "wsfleet.seconds" (default "90s" (index .Values.gateway.config "idle-timeout")) | float64 -}}
{{- if le $idle $hb -}}
{{- fail "gateway.config.idle-timeout must be longer than gateway.config.heartbeat" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.nginx.enabled -}}
{{- $twice := mulf 2.0 $hb -}}
{{- if or (lt (float64 .Values.ingress.nginx.proxyReadTimeoutSeconds) $twice) (lt (float64 .Values.ingress.nginx.proxySendTimeoutSeconds) $twice) -}}
{{- fail (printf "ingress.nginx.proxyReadTimeoutSeconds and proxySendTimeoutSeconds must be at least twice the heartbeat (%vs): a quiet connection is cut by the proxy otherwise" $hb) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.stickyRouting.enabled (not (or .Values.ingress.stickyRouting.header .Values.ingress.stickyRouting.queryArg)) -}}
{{- fail "ingress.stickyRouting needs a header or a queryArg to hash on" -}}
{{- end -}}
{{- if and .Values.ingress.stickyRouting.header .Values.ingress.stickyRouting.queryArg -}}
{{- fail "ingress.stickyRouting: set header or queryArg, not both" -}}
{{- end -}}
{{- if and .Values.ingress.stickyRouting.enabled (not (and .Values.ingress.enabled .Values.ingress.nginx.enabled)) -}}
{{- fail "ingress.stickyRouting is ingress-nginx's consistent hash: it needs ingress.enabled and ingress.nginx.enabled (with another controller, set its hashing annotation in ingress.annotations and leave stickyRouting off)" -}}
{{- end -}}
{{- if and .Values.nats.deploy .Values.nats.jetstream.enabled (eq (int .Values.nats.replicas) 2) -}}
{{- fail "nats.replicas: JetStream needs 1 or at least 3 servers (2 have no quorum once one stops)" -}}
{{- end -}}
{{- if and .Values.gateway.autoscaling.enabled (not (or .Values.gateway.autoscaling.cpu.enabled .Values.gateway.autoscaling.connections.enabled)) -}}
{{- fail "gateway.autoscaling needs cpu.enabled or connections.enabled" -}}
{{- end -}}
{{- $_ := include "wsfleet.gateway.grace" . -}}
{{- if .Values.nats.deploy -}}
{{- $ldm := include "wsfleet.seconds" .Values.nats.lameDuckDuration | float64 -}}
{{- $ldmGrace := include "wsfleet.seconds" .Values.nats.lameDuckGracePeriod | float64 -}}
{{- if lt $ldm 30.0 -}}
{{- fail "nats.lameDuckDuration must be at least 30s (nats-server's minimum)" -}}
{{- end -}}
{{- if le (float64 .Values.nats.terminationGracePeriodSeconds) (addf $ldm $ldmGrace) -}}
{{- fail (printf "nats.terminationGracePeriodSeconds (%v) must be longer than lameDuckDuration + lameDuckGracePeriod (%vs)" .Values.nats.terminationGracePeriodSeconds (addf $ldm $ldmGrace)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
