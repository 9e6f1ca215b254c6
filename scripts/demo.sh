#!/usr/bin/env bash
# The main job on the embedded default: a local repository, a generated disk image and a
# file tree; back up, change, back up again with changed ranges, restore, verify, report.
# Then an application on the simulated cluster (`coffer dev cluster`): its resources and
# its volume's data backed up, its namespace deleted, both restored, the data checked.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/coffer-demo.XXXXXX)}
mkdir -p "$work"
echo "==> building coffer" >&2
cargo build -q -j2 -p coffer --features dev-cluster
coffer=$(pwd)/target/debug/coffer

export COFFER_REPO=$work/repo COFFER_PASSWORD=${COFFER_PASSWORD:-demo-password} COFFER_CACHE_DIR=$work/cache
rm -rf "$COFFER_REPO" "$COFFER_CACHE_DIR" "$work/restored.img" "$work/restored-tree"
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "==> generating a 256 MiB disk image (zero runs, random data, text) and a file tree"
python3 - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
rnd = random.Random(42)
MiB = 1 << 20
with open(os.path.join(work, "disk.img"), "wb") as f:
    f.truncate(256 * MiB)
    for i in range(64):  # 4 MiB runs
        kind = rnd.random()
        f.seek(i * 4 * MiB)
        if kind < 0.4:
            continue  # zeros (a hole)
        elif kind < 0.7:
            f.write(rnd.randbytes(4 * MiB))
        else:
            line = b"log line %d: everything is fine\n"
            f.write(b"".join(line % j for j in range(4 * MiB // 30))[: 4 * MiB])
tree = os.path.join(work, "tree")
for d in range(20):
    os.makedirs(os.path.join(tree, f"dir{d:02}"), exist_ok=True)
    for n in range(50):
        with open(os.path.join(tree, f"dir{d:02}", f"file{n:03}.txt"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(100, 40000)))
PY

echo "==> coffer repo init"
"$coffer" repo init
echo "==> first backups"
b1=$("$coffer" volume backup "$work/disk.img" --json)
echo "image: $(echo "$b1" | field "['bytes_total']") bytes, read $(echo "$b1" | field "['bytes_read']"), stored $(echo "$b1" | field "['bytes_new']") in $(echo "$b1" | field "['duration_s']") s"
t1=$("$coffer" volume backup "$work/tree" --json)
echo "tree:  $(echo "$t1" | field "['files']") files, $(echo "$t1" | field "['bytes_total']") bytes, stored $(echo "$t1" | field "['bytes_new']")"

echo "==> changing 8 blocks of the image and 10 files"
python3 - "$work" <<'PY'
import json, os, random, sys
work = sys.argv[1]
rnd = random.Random(7)
ranges = []
with open(os.path.join(work, "disk.img"), "r+b") as f:
    for _ in range(8):
        off = rnd.randrange(0, 256 * (1 << 20) - 65536) & ~4095
        f.seek(off)
        f.write(rnd.randbytes(65536))
        ranges.append({"offset": off, "length": 65536})
json.dump(ranges, open(os.path.join(work, "changed.json"), "w"))
for d in range(10):
    with open(os.path.join(work, "tree", f"dir{d:02}", "file000.txt"), "ab") as f:
        f.write(b"changed\n")
PY
echo "==> incremental backups"
b2=$("$coffer" volume backup "$work/disk.img" --parent auto --changed-ranges "$work/changed.json" --json)
echo "image: read $(echo "$b2" | field "['bytes_read']") of $(echo "$b2" | field "['bytes_total']") bytes (changed ranges), stored $(echo "$b2" | field "['bytes_new']") in $(echo "$b2" | field "['duration_s']") s"
t2=$("$coffer" volume backup "$work/tree" --parent auto --json)
echo "tree:  read $(echo "$t2" | field "['bytes_read']") bytes, $(echo "$t2" | field "['files_unchanged']") files unchanged, stored $(echo "$t2" | field "['bytes_new']")"

echo "==> restore and verify"
"$coffer" volume restore "$(echo "$b2" | field "['snapshot_id']")" --target "$work/restored.img" >/dev/null
cmp "$work/disk.img" "$work/restored.img" && echo "image restored byte for byte ($(du -h "$work/restored.img" | cut -f1) allocated: sparse)"
"$coffer" volume restore "$(echo "$t2" | field "['snapshot_id']")" --target "$work/restored-tree" >/dev/null
diff -r "$work/tree" "$work/restored-tree" && echo "tree restored identically"
"$coffer" check --read-data
"$coffer" snapshots
"$coffer" stats

echo "==> an application on the simulated cluster"
need_apt=()
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
command -v xz >/dev/null || need_apt+=(xz-utils)  # ../shared/k8s/assets unpacks with it
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null && apt-get install -y -qq "${need_apt[@]}" </dev/null >/dev/null
fi
KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(../shared/k8s/assets)}
export KUBEBUILDER_ASSETS
rm -rf "$work/cluster"
"$coffer" dev cluster --dir "$work/cluster" >"$work/cluster.log" 2>&1 &
cluster_pid=$!
trap 'kill "$cluster_pid" 2>/dev/null; wait "$cluster_pid" 2>/dev/null || true' EXIT
until grep -q "cluster ready" "$work/cluster.log"; do
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 0.5
done
grep "cluster ready" "$work/cluster.log"
export KUBECONFIG=$work/cluster/kubeconfig

# The shop: a ConfigMap, a Secret, a PVC, a Deployment whose pod writes to the PVC (once,
# with the time in nanoseconds, so a file written again would not match), a Service.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
data: {GREETING: "hello from the shop"}
---
apiVersion: v1
kind: Secret
metadata: {name: coffer, namespace: shop}
stringData: {password: "$COFFER_PASSWORD"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox
        command: [sh, -c, 'test -f /data/orders.txt || { echo "\$GREETING" > /data/orders.txt; date +%s%N >> /data/orders.txt; seq 1 100000 >> /data/orders.txt; }; exec sleep 3600']
        envFrom: [{configMapRef: {name: web-config}}]
        volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
YAML
kubectl -n shop rollout status deploy/web --timeout=60s >/dev/null
# Ready means started (there are no probes): wait for the file to be written.
for _ in $(seq 50); do
  kubectl -n shop exec deploy/web -- test -s /data/orders.txt && break
  sleep 0.2
done
sum_before=$(kubectl -n shop exec deploy/web -- md5sum /data/orders.txt | cut -d' ' -f1)
echo "shop running; /data/orders.txt md5 $sum_before"

# mover POD_NAME ARGS_JSON: a pod running the coffer image with the PVC `data` at /data and
# the repository (a host directory: pods share the host's file system) at the same path;
# prints the pod's log (coffer's output) and fails when the pod does.
mover() {
  local name=$1 args=$2
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: shop}
spec:
  restartPolicy: Never
  containers:
  - name: coffer
    image: coffer
    args: $args
    env:
    - {name: COFFER_REPO, value: "$COFFER_REPO"}
    - {name: COFFER_CACHE_DIR, value: "$work/cache-mover"}
    - name: COFFER_PASSWORD
      valueFrom: {secretKeyRef: {name: coffer, key: password}}
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: repo, mountPath: "$COFFER_REPO"}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: repo, hostPath: {path: "$COFFER_REPO"}}
YAML
  local phase="" deadline=$((SECONDS + 120))
  while [ "$phase" != Succeeded ] && [ "$phase" != Failed ]; do
    [ $SECONDS -lt $deadline ] || { echo "pod $name did not finish in 120 s" >&2; exit 1; }
    sleep 0.5
    phase=$(kubectl -n shop get pod "$name" -o jsonpath='{.status.phase}')
  done
  kubectl -n shop logs "$name"
  [ "$phase" = Succeeded ] || { echo "$name failed" >&2; exit 1; }
  kubectl -n shop delete pod "$name" --wait >/dev/null
}

echo "==> coffer resources backup --namespace shop"
r1=$("$coffer" resources backup --namespace shop --json)
resources_id=$(echo "$r1" | field "['snapshot_id']")
echo "resources: $(echo "$r1" | field "['objects']") objects in snapshot $resources_id"
echo "==> the PVC's data, backed up by a coffer pod"
v1=$(mover backup '["volume", "backup", "/data", "--fs", "--tag", "pvc=shop/data", "--json"]')
volume_id=$(echo "$v1" | field "['snapshot_id']")
echo "volume: $(echo "$v1" | field "['bytes_total']") bytes in snapshot $volume_id"

echo "==> disaster: kubectl delete namespace shop (the PV is reclaimed with it)"
kubectl delete namespace shop --wait --timeout=120s >/dev/null
kubectl get namespace shop >/dev/null 2>&1 && { echo "namespace shop still exists" >&2; exit 1; }

echo "==> restore: everything but the Deployment, the PVC's data, then the Deployment"
"$coffer" resources restore "$resources_id" --exclude-resources deployments --json >"$work/restore1.json"
mover restore "[\"volume\", \"restore\", \"$volume_id\", \"--target\", \"/data\", \"--json\"]" >/dev/null
"$coffer" resources restore "$resources_id" --include-resources deployments --json >"$work/restore2.json"
python3 - "$work/restore1.json" "$work/restore2.json" <<'PY'
import json, sys
for p in sys.argv[1:]:
    for o in json.load(open(p))["results"]:
        print(f"  {o['result']:9} {o['kind']}/{o['name']}" + (f"  ({o['reason']})" if o.get("reason") else ""))
PY
kubectl -n shop rollout status deploy/web --timeout=60s >/dev/null
sum_after=$(kubectl -n shop exec deploy/web -- md5sum /data/orders.txt | cut -d' ' -f1)
[ "$sum_before" = "$sum_after" ] || { echo "restored data differs: $sum_after" >&2; exit 1; }
echo "shop running again in a new namespace object with its data: /data/orders.txt md5 $sum_after"
kubectl -n shop get deploy,pod,svc,pvc,configmap,secret
echo "==> done; everything is in $work"
