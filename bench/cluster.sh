# Sourced by the bench scripts: start_cluster COFFER_BINARY WORKDIR starts `coffer dev
# cluster` in WORKDIR/cluster, stops it when the script exits, waits until it is ready and
# sets KUBECONFIG and kc (the kubectl command line for it).
start_cluster() {
  local bin=$1 work=$2
  echo "==> starting the test cluster" >&2
  "$bin" dev cluster --dir "$work/cluster" >"$work/cluster.log" 2>&1 &
  cluster_pid=$!
  trap 'kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null || true' EXIT
  for _ in $(seq 600); do
    grep -q "cluster ready" "$work/cluster.log" && break
    kill -0 $cluster_pid 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
    sleep 0.2
  done
  grep -q "cluster ready" "$work/cluster.log" || { echo "the test cluster did not start" >&2; exit 1; }
  export KUBECONFIG=$work/cluster/kubeconfig
  kc=(kubectl --kubeconfig "$KUBECONFIG")
}
