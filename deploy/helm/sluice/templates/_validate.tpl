{{/*
Checks of the network values that a JSON schema cannot express: CIDR syntax, host bits,
room for host subnets and overlaps. They run when anything is rendered (install, upgrade,
template, lint), so a bad value stops the release before any object reaches the cluster.
The API server applies the same rules to the ClusterNetwork (CEL in its CRD); these are
here to name the value in values.yaml. IPv6 networks are checked by the API server only.
*/}}

{{/* sluice.cidr4 parses an IPv4 CIDR: dict with start (as an integer), bits and size, or fails. */}}
{{- define "sluice.cidr4" -}}
{{- $name := index . 0 -}}{{- $cidr := index . 1 -}}
{{- if not (regexMatch "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$" $cidr) -}}
{{- fail (printf "values: %s %q is not a CIDR (want an address/prefix-length such as 10.128.0.0/14)" $name $cidr) -}}
{{- end -}}
{{- $parts := splitList "/" $cidr -}}
{{- $o := splitList "." (index $parts 0) -}}
{{- $start := add (mul (atoi (index $o 0)) 16777216) (mul (atoi (index $o 1)) 65536) (mul (atoi (index $o 2)) 256) (atoi (index $o 3)) -}}
{{- $bits := atoi (index $parts 1) -}}
{{- $size := 1 -}}
{{- range until (sub 32 $bits | int) }}{{ $size = mul $size 2 }}{{ end -}}
{{- if ne (mod $start $size) 0 -}}
{{- fail (printf "values: %s %q has host bits set (the network address of a /%d is a multiple of %d addresses)" $name $cidr $bits $size) -}}
{{- end -}}
{{- dict "start" $start "bits" $bits "size" $size | toJson -}}
{{- end -}}

{{- define "sluice.validate" -}}
{{- $nets := list -}}
{{- range $i, $n := .Values.clusterNetworks -}}
{{- $name := printf "clusterNetworks[%d].cidr" $i -}}
{{- if not (contains ":" $n.cidr) -}}
{{- $c := include "sluice.cidr4" (list $name $n.cidr) | fromJson -}}
{{- $hsl := $n.hostSubnetLength | default 9 | int -}}
{{- if ge $hsl (sub 32 (int $c.bits) | int) -}}
{{- fail (printf "values: clusterNetworks[%d].hostSubnetLength %d leaves no room: %s has %d host bits, and a host subnet must be smaller than the network" $i $hsl $n.cidr (sub 32 (int $c.bits))) -}}
{{- end -}}
{{- $nets = append $nets (dict "name" $name "cidr" $n.cidr "start" (int64 $c.start) "size" (int64 $c.size)) -}}
{{- end -}}
{{- end -}}
{{- if not (contains ":" .Values.serviceNetwork) -}}
{{- $c := include "sluice.cidr4" (list "serviceNetwork" .Values.serviceNetwork) | fromJson -}}
{{- $nets = append $nets (dict "name" "serviceNetwork" "cidr" .Values.serviceNetwork "start" (int64 $c.start) "size" (int64 $c.size)) -}}
{{- end -}}
{{- range $i, $a := $nets -}}
{{- range $j, $b := $nets -}}
{{- if lt $i $j -}}
{{- if and (lt $a.start (add $b.start $b.size)) (lt $b.start (add $a.start $a.size)) -}}
{{- fail (printf "values: %s %q overlaps %s %q" $b.name $b.cidr $a.name $a.cidr) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
