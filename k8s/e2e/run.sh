#!/usr/bin/env bash
# make e2e-kind: a fleet cluster and two member clusters in kind, xdsfleet deployed in the fleet
# cluster with members registered by Secret, an Envoy gateway there, an app with Envoy sidecars
# in each member; then checks that traffic reaches both members through the gateway and the
# sidecars, that status is written back, and that a member whose API server is cut off keeps
# serving, reported stale, until it is back.
#
# Needs docker, kind and kubectl. Without them it says so and exits 1: it never pretends to
# pass. KEEP=1 keeps the clusters afterwards (run.sh is idempotent: it reuses them).
set -euo pipefail

missing=()
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "e2e-kind: needs ${missing[*]}, which this machine lacks; nothing was run" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: docker is installed but its daemon does not answer; nothing was run" >&2
  exit 1
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
K8S="$ROOT/k8s"
WORK="$(mktemp -d)"
MEMBERS=(member-a member-b)
declare -A ZONE=([member-a]=eu-west-1a [member-b]=eu-west-1b)
GATEWAY_API=https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml
MCS_API=https://raw.githubusercontent.com/kubernetes-sigs/mcs-api/master/config/crd/multicluster.x-k8s.io_serviceexports.yaml

ctx() { echo "kind-xdsfleet-$1"; }
k() { local cluster=$1; shift; kubectl --context "$(ctx "$cluster")" "$@"; }
node_ip() { docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "xdsfleet-$1-control-plane"; }
pod_subnet() { grep podSubnet "$K8S/kind/$1.yaml" | awk '{print $2}'; }
cleanup() {
  rm -rf "$WORK"
  if [[ "${KEEP:-0}" != 1 ]]; then
    for cluster in fleet "${MEMBERS[@]}"; do kind delete cluster --name "xdsfleet-$cluster" || true; done
  fi
}
trap cleanup EXIT
# Wait for a condition (a command), with a deadline: never a bare sleep as synchronisation.
eventually() {
  local what=$1 deadline=$((SECONDS + ${TIMEOUT:-120})); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "e2e-kind: FAILED: $what" >&2; exit 1; fi
    sleep 2
  done
  echo "e2e-kind: ok: $what"
}

echo "e2e-kind: image"
docker build -f "$K8S/Dockerfile" -t xdsfleet:latest -t xdsfleet:e2e "$ROOT"

echo "e2e-kind: clusters"
for cluster in fleet "${MEMBERS[@]}"; do
  kind get clusters | grep -qx "xdsfleet-$cluster" ||
    kind create cluster --name "xdsfleet-$cluster" --config "$K8S/kind/$cluster.yaml" --wait 120s
  kind load docker-image --name "xdsfleet-$cluster" xdsfleet:latest xdsfleet:e2e
done
# Pod addresses of every cluster routed to its node from the other clusters' nodes.
for from in fleet "${MEMBERS[@]}"; do
  for to in fleet "${MEMBERS[@]}"; do
    [[ $from == "$to" ]] && continue
    docker exec "xdsfleet-$from-control-plane" ip route replace "$(pod_subnet "$to")" via "$(node_ip "$to")"
  done
done

echo "e2e-kind: CRDs"
k fleet apply --server-side -f "$GATEWAY_API"
k fleet apply -f "$K8S/crds/"
k fleet wait --for condition=established --timeout 60s \
  crd/fleets.xdsfleet.io crd/httproutes.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io
for member in "${MEMBERS[@]}"; do
  k "$member" apply -f "$MCS_API"
  k "$member" wait --for condition=established --timeout 60s crd/serviceexports.multicluster.x-k8s.io
done

echo "e2e-kind: xdsfleet in the fleet cluster, members registered by Secret"
k fleet apply -k "$K8S/fleet"
k fleet apply -f "$K8S/e2e/xds-nodeport.yaml"
for member in "${MEMBERS[@]}"; do
  k "$member" apply -f "$K8S/member/rbac.yaml"
  eventually "$member: reader token" \
    k "$member" -n xdsfleet-system get secret xdsfleet-reader-token -o 'jsonpath={.data.token}'
  token=$(k "$member" -n xdsfleet-system get secret xdsfleet-reader-token -o 'jsonpath={.data.token}' | base64 -d)
  ca=$(k "$member" -n xdsfleet-system get secret xdsfleet-reader-token -o 'jsonpath={.data.ca\.crt}')
  cat >"$WORK/$member.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: $member
  cluster: {server: "https://$(node_ip "$member"):6443", certificate-authority-data: "$ca"}
users:
- name: xdsfleet-reader
  user: {token: "$token"}
contexts:
- name: $member
  context: {cluster: $member, user: xdsfleet-reader}
current-context: $member
KUBECONFIG
  k fleet -n xdsfleet-system create secret generic "member-$member" \
    --from-file=kubeconfig="$WORK/$member.kubeconfig" --dry-run=client -o yaml |
    k fleet apply -f -
  k fleet -n xdsfleet-system label --overwrite secret "member-$member" xdsfleet.io/member=true
  k fleet -n xdsfleet-system annotate --overwrite secret "member-$member" \
    xdsfleet.io/name="$member" xdsfleet.io/region=eu-west xdsfleet.io/zone="${ZONE[$member]}"
done
k fleet -n xdsfleet-system rollout status deployment/xdsfleet --timeout 180s

bootstrap() { docker run --rm xdsfleet:e2e bootstrap "$@"; }
echo "e2e-kind: the app with Envoy sidecars in each member"
for member in "${MEMBERS[@]}"; do
  bootstrap --role sidecar --member "$member" --region eu-west --zone "${ZONE[$member]}" \
    --node-id "shop-$member" --xds-address "$(node_ip fleet):31800" >"$WORK/sidecar.yaml"
  k "$member" create configmap shop-sidecar --from-file=envoy.yaml="$WORK/sidecar.yaml" \
    --dry-run=client -o yaml | k "$member" apply -f -
  k "$member" create configmap shop --from-literal=member="$member" --dry-run=client -o yaml |
    k "$member" apply -f -
  k "$member" apply -f "$K8S/e2e/app.yaml"
  k "$member" rollout status deployment/shop --timeout 180s
done

echo "e2e-kind: an Envoy gateway in the fleet cluster"
bootstrap --gateway default/gw --region eu-west --node-id gateway \
  --xds-address xdsfleet.xdsfleet-system.svc.cluster.local:18000 >"$WORK/gateway.yaml"
k fleet create configmap envoy-gateway --from-file=envoy.yaml="$WORK/gateway.yaml" \
  --dry-run=client -o yaml | k fleet apply -f -
k fleet apply -f "$K8S/e2e/gateway.yaml"
k fleet rollout status deployment/envoy-gateway --timeout 180s

echo "e2e-kind: checks"
through_gateway() {
  docker exec xdsfleet-fleet-control-plane \
    curl -s -H 'Host: shop.example.com' "http://127.0.0.1:30080/"
}
answers_from() {  # every member in "$@" answers within 40 requests through the gateway
  local seen="" _
  for _ in $(seq 40); do seen+="$(through_gateway) "; done
  for member in "$@"; do grep -q "\"member\": \"$member\"" <<<"$seen" || return 1; done
}
eventually "the gateway reaches both members" answers_from member-a member-b
sidecar_reaches_both() {
  local pod seen="" _
  pod=$(k member-a get pod -l app.kubernetes.io/name=shop -o 'jsonpath={.items[0].metadata.name}')
  for _ in $(seq 40); do
    seen+="$(k member-a exec "$pod" -c app -- python -c "from harness.local import get; print(get(80, host='shop.default')[1].decode())") "
  done
  grep -q '"member": "member-a"' <<<"$seen" && grep -q '"member": "member-b"' <<<"$seen"
}
eventually "a sidecar in member-a reaches both members" sidecar_reaches_both
route_programmed() {
  k fleet get httproute shop -o 'jsonpath={.status.parents[0].conditions[?(@.type=="Programmed")].status}' |
    grep -qx True
}
eventually "HTTPRoute status written back (Programmed)" route_programmed

# Cut member-b's API server off from the fleet cluster (its pods keep running and serving).
cut() {
  for source in "$(node_ip fleet)" "$(pod_subnet fleet)"; do
    docker exec xdsfleet-member-b-control-plane \
      iptables "$1" INPUT -p tcp --dport 6443 -s "$source" -j DROP
  done
}
cut -I
member_b_stale() {  # /debug/members lists name, source, stale, ... in that order
  docker exec xdsfleet-fleet-control-plane curl -s "http://127.0.0.1:31902/debug/members" |
    grep -o '"name": "member-b"[^}]*' | grep -q '"stale": true'
}
TIMEOUT=180 eventually "member-b, its API server cut off, is reported stale" member_b_stale
eventually "member-b still serves its endpoints" answers_from member-a member-b
cut -D
member_b_back() { ! member_b_stale; }
TIMEOUT=180 eventually "member-b, its API server back, is no longer stale" member_b_back
echo "e2e-kind: PASSED"
