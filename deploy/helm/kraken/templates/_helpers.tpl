{{/* The prefix of every object's name: the release name, with "-kraken" unless it has it. */}}
{{- define "kraken.fullname" -}}
{{- if contains "kraken" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kraken" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; `component` is set by the caller's dict. */}}
{{- define "kraken.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "kraken.selectorLabels" . }}
{{- end -}}

{{- define "kraken.selectorLabels" -}}
app.kubernetes.io/name: kraken
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kraken.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}

{{/* `host:port` of every origin, by its stable StatefulSet name, as a TOML array. */}}
{{- define "kraken.originMembers" -}}
{{- $fullname := include "kraken.fullname" . -}}
{{- $names := list -}}
{{- range $i := until (int .Values.origin.replicas) -}}
{{- $names = append $names (printf "\"%s-origin-%d.%s-origin.%s.svc.%s:%d\"" $fullname $i $fullname $.Release.Namespace $.Values.clusterDomain (int $.Values.origin.port)) -}}
{{- end -}}
[{{ join ", " $names }}]
{{- end -}}

{{/* `host:port` of every build-index, by its stable StatefulSet name, as a TOML array. */}}
{{- define "kraken.buildIndexes" -}}
{{- $fullname := include "kraken.fullname" . -}}
{{- $names := list -}}
{{- range $i := until (int .Values.buildIndex.replicas) -}}
{{- $names = append $names (printf "\"%s-build-index-%d.%s-build-index.%s.svc.%s:%d\"" $fullname $i $fullname $.Release.Namespace $.Values.clusterDomain (int $.Values.buildIndex.port)) -}}
{{- end -}}
[{{ join ", " $names }}]
{{- end -}}

{{/* The Secret holding the tracker's publish token (key `publish-token`). */}}
{{- define "kraken.publishTokenSecret" -}}
{{- .Values.publishToken.existingSecret | default (printf "%s-publish-token" (include "kraken.fullname" .)) -}}
{{- end -}}

{{/* Where the tracker and the origins read the publish token (the Secret's volume). */}}
{{- define "kraken.publishTokenFile" -}}
/etc/kraken-secret/publish-token
{{- end -}}

{{/*
The publish token's volume and its mount, for the tracker's and the origins' pods. Readable
by the pod's group (fsGroup) only: the file is root's, the process runs as 10001.
*/}}
{{- define "kraken.publishTokenVolume" -}}
- name: publish-token
  secret:
    secretName: {{ include "kraken.publishTokenSecret" . }}
    items:
      - key: publish-token
        path: publish-token
    defaultMode: 0440
{{- end -}}

{{- define "kraken.publishTokenMount" -}}
- name: publish-token
  mountPath: {{ include "kraken.publishTokenFile" . | dir }}
  readOnly: true
{{- end -}}

{{- define "kraken.trackerUrl" -}}
{{ printf "http://%s-tracker.%s.svc.%s:%d" (include "kraken.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.tracker.port) }}
{{- end -}}

{{/*
The init container that writes a pod's config: the role's ConfigMap entry with ${POD_IP} and
${POD_NAME} filled in (what a pod announces is its own address or name). `role` is set by the
caller's dict.
*/}}
{{- define "kraken.renderConfig" -}}
- name: render-config
  image: {{ .root.Values.configRenderer.image }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - sed -e "s|\${POD_IP}|${POD_IP}|g" -e "s|\${POD_NAME}|${POD_NAME}|g" /etc/kraken-template/{{ .role }}.toml > /etc/kraken/{{ .role }}.toml
  env:
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: config-template
      mountPath: /etc/kraken-template
    - name: config
      mountPath: /etc/kraken
{{- end -}}

{{- define "kraken.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Liveness on /health and readiness on /readiness of the named port. */}}
{{- define "kraken.probes" -}}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: {{ .path | default "/readiness" }}
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}
