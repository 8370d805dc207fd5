{{/* Names, labels and the pieces shared by the DaemonSet, the Deployment, the StatefulSet and the tail DaemonSet. */}}

{{- define "edge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edge.fullname" -}}
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

{{- define "edge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The mode, checked once: a typo must not silently install the wrong workload. */}}
{{- define "edge.mode" -}}
{{- if not (has .Values.mode (list "daemonset" "gateway")) }}
{{- fail (printf "mode must be daemonset or gateway, not %q" (toString .Values.mode)) }}
{{- end }}
{{- .Values.mode }}
{{- end }}

{{/* "true" when tail sampling is on; checked once, like the mode: it needs the gateway and a policy. */}}
{{- define "edge.tailSampling" -}}
{{- if .Values.tailSampling.enabled }}
{{- if ne (include "edge.mode" .) "gateway" }}
{{- fail "tailSampling.enabled needs mode: gateway (its instances find each other through a headless Service)" }}
{{- end }}
{{- if not (or .Values.tailSampling.policies (index (.Values.config.tail_sampling | default dict) "policies")) }}
{{- fail "tailSampling.enabled needs tailSampling.policies: without one no trace would be sampled" }}
{{- end }}
{{- true }}
{{- end }}
{{- end }}

{{/* The headless Service whose addresses are the tail-sampling members (tail_sampling.peers.dns). */}}
{{- define "edge.peersService" -}}
{{- printf "%s-peers" (include "edge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edge.labels" -}}
helm.sh/chart: {{ include "edge.chart" . }}
app.kubernetes.io/name: {{ include "edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of a pod: the selector labels plus the chart's. Call with (dict "root" $ "component" "edge"). */}}
{{- define "edge.podLabels" -}}
{{ include "edge.selectorLabels" . }}
helm.sh/chart: {{ include "edge.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; the component keeps edge pods and tail pods apart. Call with (dict "root" $ "component" "edge"). */}}
{{- define "edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "edge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "edge.port" -}}
{{- int (default 8080 .Values.config.listen_port) }}
{{- end }}

{{/* The OTLP/gRPC port; empty when config.grpc.enabled is false. */}}
{{- define "edge.grpcPort" -}}
{{- $grpc := .Values.config.grpc | default dict }}
{{- if ne (toString (index $grpc "enabled")) "false" }}{{ int (default 4317 (index $grpc "listen_port")) }}{{ end }}
{{- end }}

{{/* The Service exists in gateway mode, and in daemonset mode when asked for or scraped through a ServiceMonitor. */}}
{{- define "edge.serviceEnabled" -}}
{{- if or (eq (include "edge.mode" .) "gateway") .Values.service.enabled .Values.serviceMonitor.enabled }}true{{ end }}
{{- end }}

{{/* The Secret holding the policy-server API key: the existing one, the chart's, or none. */}}
{{- define "edge.apiKeySecretName" -}}
{{- if .Values.tero.existingSecret }}
{{- .Values.tero.existingSecret }}
{{- else if .Values.tero.apiKey }}
{{- include "edge.fullname" . }}
{{- end }}
{{- end }}

{{- define "edge.apiKeySecretKey" -}}
{{- if .Values.tero.existingSecret }}{{ .Values.tero.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/* edge's config file: the values' config plus the providers the chart adds. */}}
{{- define "edge.configJson" -}}
{{- $config := deepCopy .Values.config }}
{{- $providers := list }}
{{- range (.Values.config.policy_providers | default list) }}
{{- $providers = append $providers . }}
{{- end }}
{{- if .Values.policies }}
{{- $providers = append $providers (dict "id" "chart-policies" "type" "file" "path" "/etc/edge/policies.json") }}
{{- end }}
{{- if .Values.tero.url }}
{{- $tero := dict "id" "tero" "type" "http" "url" .Values.tero.url "poll_interval" .Values.tero.pollInterval }}
{{- if include "edge.apiKeySecretName" . }}
{{- $_ := set $tero "headers" (list (dict "name" .Values.tero.header.name "value" .Values.tero.header.value)) }}
{{- end }}
{{- $providers = append $providers $tero }}
{{- end }}
{{- $_ := set $config "policy_providers" $providers }}
{{- if include "edge.tailSampling" . }}
{{- $_ := set $config "tail_sampling" (include "edge.tailSamplingConfig" . | fromJson) }}
{{- end }}
{{- toPrettyJson $config }}
{{- end }}

{{/* config.tail_sampling plus what the chart decides: on, the policies, the WAL's directory, and the peers
     as the headless Service's addresses on the proxy's port (each pod is found by its POD_IP among them). */}}
{{- define "edge.tailSamplingConfig" -}}
{{- $tail := deepCopy (.Values.config.tail_sampling | default dict) }}
{{- $_ := set $tail "enabled" true }}
{{- if .Values.tailSampling.policies }}
{{- $_ := set $tail "policies" .Values.tailSampling.policies }}
{{- end }}
{{- $_ := set $tail "wal_dir" .Values.tailSampling.wal.dir }}
{{- $peers := omit (index $tail "peers" | default dict) "static" }}
{{- $_ := set $peers "dns" (printf "%s.%s.svc" (include "edge.peersService" .) .Release.Namespace) }}
{{- $_ := set $peers "port" (int (include "edge.port" .)) }}
{{- $_ := set $tail "peers" $peers }}
{{- toJson $tail }}
{{- end }}

{{- define "edge.tolerations" -}}
{{- $tolerations := .Values.tolerations }}
{{- if kindIs "invalid" $tolerations }}
{{- $tolerations = index .Values (include "edge.mode" .) "tolerations" }}
{{- end }}
{{- with $tolerations -}}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "edge.updateStrategy" -}}
{{- default (index .Values (include "edge.mode" .) "updateStrategy") .Values.updateStrategy | toYaml }}
{{- end }}

{{/* Pod annotations: a checksum of the config (and of the chart's Secret) so that a change rolls the pods. */}}
{{- define "edge.podAnnotations" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and .Values.tero.apiKey (not .Values.tero.existingSecret) }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The edge container. */}}
{{- define "edge.container" -}}
- name: edge
  image: {{ include "edge.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- with .Values.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  args: ["/etc/edge/config.json"]
  ports:
    - name: http
      containerPort: {{ include "edge.port" . }}
      {{- if and (eq (include "edge.mode" .) "daemonset") .Values.daemonset.hostPort.enabled }}
      hostPort: {{ int .Values.daemonset.hostPort.port }}
      {{- end }}
      protocol: TCP
    {{- with include "edge.grpcPort" . }}
    - name: grpc
      containerPort: {{ . }}
      {{- if and (eq (include "edge.mode" $) "daemonset") $.Values.daemonset.hostPort.enabled }}
      hostPort: {{ int $.Values.daemonset.hostPort.grpcPort }}
      {{- end }}
      protocol: TCP
    {{- end }}
  env:
    {{- if not (hasKey .Values.config "workers") }}
    # One gunicorn worker per CPU of the limit (rounded up), not per CPU of the node.
    - name: TERO_WORKERS
      valueFrom:
        resourceFieldRef:
          containerName: edge
          resource: limits.cpu
          divisor: "1"
    {{- end }}
    {{- if not (hasKey (.Values.config.service | default dict) "instance_id") }}
    - name: TERO_SERVICE_INSTANCE_ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- end }}
    {{- if include "edge.tailSampling" . }}
    # This instance's address among the tail-sampling peers (tail_sampling.peers.advertise defaults to it).
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- end }}
    {{- with include "edge.apiKeySecretName" . }}
    - name: TERO_API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ include "edge.apiKeySecretKey" $ }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: config
      mountPath: /etc/edge
      readOnly: true
    - name: tmp
      mountPath: /tmp
    - name: shm
      mountPath: /dev/shm
    {{- if include "edge.tailSampling" . }}
    - name: wal
      mountPath: {{ .Values.tailSampling.wal.dir }}
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The edge-tail container; call with (dict "root" $ "forwardUrl" URL). */}}
{{- define "edge.tailContainer" -}}
{{- $root := .root }}
{{- $tail := $root.Values.tail -}}
- name: tail
  image: {{ printf "%s:%s" (default $root.Values.image.repository $tail.image.repository) (default (default $root.Chart.AppVersion $root.Values.image.tag) $tail.image.tag) | quote }}
  imagePullPolicy: {{ default $root.Values.image.pullPolicy $tail.image.pullPolicy }}
  {{- with $tail.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  args:
    - --read-from
    - {{ $tail.readFrom | quote }}
    - --format
    - {{ $tail.format | quote }}
    - --state-dir
    - /var/lib/edge-tail
    - --forward-url
    - {{ default .forwardUrl $tail.forwardUrl | quote }}
    - --forward-format
    - {{ $tail.forwardFormat | quote }}
    {{- if not (kindIs "invalid" $tail.batchLines) }}
    - --batch-lines
    - {{ int $tail.batchLines | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $tail.batchIntervalMs) }}
    - --batch-interval-ms
    - {{ int $tail.batchIntervalMs | quote }}
    {{- end }}
    {{- range $key, $value := $tail.resource }}
    - --resource
    - {{ printf "%s=%s" $key (toString $value) | quote }}
    {{- end }}
    {{- range $tail.extraArgs }}
    - {{ . | quote }}
    {{- end }}
    {{- range $tail.paths }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: K8S_NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    {{- with $tail.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $tail.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tail.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: tail-state
      mountPath: /var/lib/edge-tail
    - name: tail-tmp
      mountPath: /tmp
    {{- range $i, $path := $tail.hostPaths }}
    - name: {{ printf "tail-host-%d" $i }}
      mountPath: {{ $path }}
      readOnly: true
    {{- end }}
{{- end }}

{{/* Volumes of the tail container: host log directories (read-only mounts) and the checkpoint directory. */}}
{{- define "edge.tailVolumes" -}}
- name: tail-state
  hostPath:
    path: {{ printf "%s/%s" (trimSuffix "/" .Values.tail.stateHostPath) (include "edge.fullname" .) }}
    type: DirectoryOrCreate
- name: tail-tmp
  emptyDir: {}
{{- range $i, $path := .Values.tail.hostPaths }}
- name: {{ printf "tail-host-%d" $i }}
  hostPath:
    path: {{ $path }}
    type: Directory
{{- end }}
{{- end }}

{{/* The edge pod template, shared by the DaemonSet, the Deployment and the tail-sampling StatefulSet. */}}
{{- define "edge.podTemplate" -}}
metadata:
  annotations:
    {{- include "edge.podAnnotations" . | nindent 4 }}
  labels:
    {{- include "edge.podLabels" (dict "root" . "component" "edge") | nindent 4 }}
spec:
  serviceAccountName: {{ include "edge.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (eq (include "edge.mode" .) "daemonset") .Values.daemonset.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  terminationGracePeriodSeconds: {{ int .Values.terminationGracePeriodSeconds }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    {{- include "edge.container" . | nindent 4 }}
    {{- if and .Values.tail.enabled (eq (include "edge.mode" .) "daemonset") }}
    {{- include "edge.tailContainer" (dict "root" . "forwardUrl" (printf "http://127.0.0.1:%s/v1/logs" (include "edge.port" .))) | nindent 4 }}
    {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "edge.fullname" . }}
    - name: tmp
      emptyDir: {}
    - name: shm
      emptyDir:
        medium: Memory
        {{- with .Values.shm.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- if and .Values.tail.enabled (eq (include "edge.mode" .) "daemonset") }}
    {{- include "edge.tailVolumes" . | nindent 4 }}
    {{- end }}
    {{- if and (include "edge.tailSampling" .) (not .Values.tailSampling.wal.persistence.enabled) }}
    - name: wal
      {{- with .Values.tailSampling.wal.sizeLimit }}
      emptyDir:
        sizeLimit: {{ . }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- include "edge.tolerations" . | nindent 2 }}
{{- end }}
