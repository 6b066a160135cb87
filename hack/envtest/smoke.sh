#!/usr/bin/env bash
# Smoke test of a running hack/envtest.sh control plane: what the operator's tests rely on.
#
#   eval "$(hack/envtest.sh up | tail -n 2 | sed 's/^/export /')"
#   hack/envtest/smoke.sh            (or: hack/envtest.sh smoke, which starts it first)
#
# Checks, in a throw-away namespace: a CRD with CEL rules (incl. a transition rule) is served and
# enforced; a custom resource and `kubectl apply --dry-run=server`; a Deployment is accepted and
# stays unavailable (no kubelet); the garbage collector deletes a ConfigMap whose owner was
# deleted; the namespace controller finishes a namespace deletion. Needs KUBECONFIG and K8S_BIN.
# Prints progress to stderr and `smoke: N passed, 0 failed` at the end; exits non-zero on failure.
set -euo pipefail

: "${KUBECONFIG:?set KUBECONFIG (from hack/envtest.sh up)}"
: "${K8S_BIN:?set K8S_BIN (from hack/envtest.sh up)}"
export KUBECONFIG
KUBECTL=$K8S_BIN/kubectl
NS=envtest-smoke-$$-$RANDOM
CRD=widgets.smoke.envtest.metricstream.dev
PASSED=0

log() { printf 'smoke: %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  echo "smoke: $PASSED passed, 1 failed"
  exit 1
}
ok() {
  PASSED=$((PASSED + 1))
  log "ok: $*"
}
k() { "$KUBECTL" "$@"; }

# Poll a command until it succeeds, for at most $1 seconds.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${secs}s)"
    sleep 0.2
  done
}
gone() { ! k get "$@" >/dev/null 2>&1; }

cleanup() {
  k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k delete crd "$CRD" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

k get --raw /readyz >/dev/null || fail "the API server at $(k config view --minify -o 'jsonpath={.clusters[0].cluster.server}') is not ready"
ok "API server ready ($(k version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n 1))"

k create namespace "$NS" >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $CRD
spec:
  group: smoke.envtest.metricstream.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [partitions]
            properties:
              partitions: {type: integer, minimum: 1, maximum: 1024}
            x-kubernetes-validations:
            - rule: "self.partitions >= oldSelf.partitions"
              message: partitions may not decrease
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
EOF
wait_for 30 "CRD established" k wait --for=condition=Established --timeout=1s "crd/$CRD"
ok "CRD established"

widget() {
  printf 'apiVersion: smoke.envtest.metricstream.dev/v1alpha1\nkind: Widget\nmetadata: {name: w1, namespace: %s}\nspec: {partitions: %s}\n' "$NS" "$1"
}
# Discovery of a new CRD can lag its Established condition by a moment.
wait_for 30 "custom resource created" k apply -f <(widget 4)
ok "custom resource applied"
widget 8 | k apply --dry-run=server -f - >/dev/null || fail "server-side dry run"
[[ $(k -n "$NS" get widget w1 -o 'jsonpath={.spec.partitions}') == 4 ]] || fail "dry run changed the object"
ok "kubectl apply --dry-run=server (object unchanged)"
if out=$(widget 2 | k apply -f - 2>&1); then fail "CEL transition rule not enforced (partitions 4 -> 2 accepted)"; fi
[[ $out == *"partitions may not decrease"* ]] || fail "unexpected rejection: $out"
ok "CEL transition rule enforced"
if widget 0 | k apply -f - >/dev/null 2>&1; then fail "schema minimum not enforced"; fi
ok "schema validation enforced"
widget 6 | k apply --server-side --force-conflicts --field-manager=smoke -f - >/dev/null || fail "server-side apply"
ok "server-side apply"

k -n "$NS" create deployment web --image=registry.invalid/none:1 --replicas=1 >/dev/null
wait_for 30 "deployment controller writes status" \
  bash -c "[[ -n \$('$KUBECTL' -n '$NS' get deploy web -o 'jsonpath={.status.conditions[?(@.type==\"Available\")].status}') ]]"
[[ $(k -n "$NS" get deploy web -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}') == False ]] ||
  fail "deployment unexpectedly available"
ok "deployment accepted, controller-managed, unavailable (no kubelet)"

# Garbage collection, twice: a built-in owner, and a custom resource as owner (the operator's
# case; the garbage collector learns of a new CRD's resource by rediscovery every 30 s).
owned_configmap() { # name owner-apiVersion owner-kind owner-name owner-uid
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $1
  namespace: $NS
  ownerReferences:
  - {apiVersion: $2, kind: $3, name: $4, uid: "$5", controller: true, blockOwnerDeletion: true}
data: {k: v}
EOF
}
k -n "$NS" create configmap owner >/dev/null
owned_configmap child v1 ConfigMap owner "$(k -n "$NS" get configmap owner -o 'jsonpath={.metadata.uid}')"
owned_configmap widget-child smoke.envtest.metricstream.dev/v1alpha1 Widget w1 \
  "$(k -n "$NS" get widget w1 -o 'jsonpath={.metadata.uid}')"
t0=$SECONDS
k -n "$NS" delete configmap owner >/dev/null
wait_for 60 "garbage collector deletes the child of a deleted ConfigMap" gone -n "$NS" configmap child
ok "garbage collector deleted the child of a deleted ConfigMap ($((SECONDS - t0)) s)"
t0=$SECONDS
k -n "$NS" delete widget w1 >/dev/null
wait_for 90 "garbage collector deletes the child of a deleted custom resource" gone -n "$NS" configmap widget-child
ok "garbage collector deleted the child of a deleted custom resource ($((SECONDS - t0)) s)"

k delete crd "$CRD" --wait=false >/dev/null
k delete namespace "$NS" --wait=false >/dev/null
wait_for 90 "namespace deletion completes" gone namespace "$NS"
wait_for 60 "CRD deletion completes" gone crd "$CRD"
ok "namespace and CRD deleted"
trap - EXIT
echo "smoke: $PASSED passed, 0 failed"
