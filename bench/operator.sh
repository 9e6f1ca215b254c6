#!/usr/bin/env bash
# The operator's cost, on the local test cluster (`coffer dev cluster`: a real
# kube-apiserver; the operator installed from deploy/ and running as its pods):
#  1. one PVC of SIZE_MIB random data: the time from the Backup's creation to Completed,
#     against `coffer volume backup` of the same data alone (the operator's overhead:
#     snapshot, PVC from it, mover pod, status, manifest);
#  2. four such PVCs in one Backup (movers in parallel), against four CLI backups in turn;
#  3. the first case restored into a new namespace by a Restore (Coffer's volume populator
#     fills the PVC): the time from the Restore's creation to Completed, against
#     `coffer volume restore` of the same snapshot alone (the RTO overhead);
#  4. a Block PVC of SIZE_MIB random data backed up, restored whole into a new namespace
#     by a Restore, then 1% of it overwritten and restored in place (mode inPlace: only
#     the differing blocks written), the result compared with the backed-up data;
#  5. the operator's peak RSS idle, and after backing up a namespace of OBJECTS ConfigMaps.
# Prints TSV lines and a summary for bench/RESULTS.md.
#
# Usage: bench/operator.sh   env SIZE_MIB (1024), OBJECTS (10000), WORK (bench/work-operator)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SIZE_MIB=${SIZE_MIB:-1024}
OBJECTS=${OBJECTS:-10000}
work=${WORK:-$root/bench/work-operator}
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$("$root/../shared/k8s/assets" 2>/dev/null || true)}
[ -n "$KUBEBUILDER_ASSETS" ] || { echo "set KUBEBUILDER_ASSETS (the kube-apiserver and etcd binaries)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl is needed (apt-get install kubernetes-client)" >&2; exit 1; }

echo "==> building coffer (release)" >&2
cargo build -q --release -j2 -p coffer --features dev-cluster
coffer=$root/target/release/coffer

rm -rf "$work" && mkdir -p "$work"
# shellcheck source=bench/cluster.sh
source "$root/bench/cluster.sh"
start_cluster "$coffer" "$work"
"${kc[@]}" apply -k deploy/ >/dev/null
for _ in $(seq 600); do
  holder=$("${kc[@]}" -n coffer-system get lease coffer-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [ -n "$holder" ] && break
  sleep 0.2
done
[ -n "$holder" ] || { echo "the operator did not start" >&2; exit 1; }
# The leader's process (pods are host processes on the simulated node).
leader_pid() {
  local h
  h=$("${kc[@]}" -n coffer-system get lease coffer-operator -o jsonpath='{.spec.holderIdentity}')
  for p in $(pgrep -f "coffer operator"); do
    if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx "POD_NAME=$h"; then echo "$p"; return; fi
  done
}
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }
sleep 5
idle_rss=$(rss "$(leader_pid)")

now() { date +%s.%N; }
wait_backup() { # NS NAME -> prints seconds from creation to an end phase
  local ns=$1 name=$2 t0 phase
  t0=$(now)
  while :; do
    phase=$("${kc[@]}" -n "$ns" get backup "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case $phase in Completed) break ;; Failed|PartiallyFailed|FailedValidation|Canceled)
      "${kc[@]}" -n "$ns" get backup "$name" -o yaml >&2; exit 1 ;; esac
    sleep 0.1
  done
  python3 -c "print(f'{$(now) - $t0:.2f}')"
}

app() { # NS COUNT
  local ns=$1 count=$2
  {
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n' "$ns"
    printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: key, namespace: %s}\nstringData: {password: bench}\n---\n' "$ns"
    printf 'apiVersion: coffer.dev/v1alpha1\nkind: BackupRepository\nmetadata: {name: main, namespace: %s}\nspec: {location: "%s/repo-%s", keySecret: {name: key}, initialize: true}\n' "$ns" "$work" "$ns"
    for i in $(seq "$count"); do
      printf -- '---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data%s, namespace: %s, labels: {app: bench}}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: %sMi}}}\n' "$i" "$ns" "$((SIZE_MIB * 2))"
    done
  } | "${kc[@]}" apply -f - >/dev/null
  for i in $(seq "$count"); do
    for _ in $(seq 300); do
      pv=$("${kc[@]}" -n "$ns" get pvc "data$i" -o jsonpath='{.spec.volumeName}')
      [ -n "$pv" ] && break
      sleep 0.2
    done
    # Fill the volume's directory directly (the node's storage is on this host).
    head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/cluster/storage/volumes/$pv/data.bin"
  done
}

run_case() { # NS COUNT
  local ns=$1 count=$2
  app "$ns" "$count"
  for _ in $(seq 300); do
    [ "$("${kc[@]}" -n "$ns" get backuprepository main -o jsonpath='{.status.phase}')" = Ready ] && break
    sleep 0.2
  done
  printf 'apiVersion: coffer.dev/v1alpha1\nkind: Backup\nmetadata: {name: b1, namespace: %s}\nspec: {selection: {labelSelector: {matchLabels: {app: bench}}}, repository: {name: main}}\n' "$ns" | "${kc[@]}" apply -f - >/dev/null
  op=$(wait_backup "$ns" b1)
  # The same data by the CLI alone, into a fresh repository.
  export COFFER_PASSWORD=bench COFFER_CACHE_DIR=$work/cache-cli
  rm -rf "$work/cli-repo-$ns" && "$coffer" --repo "$work/cli-repo-$ns" repo init --kdf-memory-kib 1024 >/dev/null
  t0=$(now)
  for i in $(seq "$count"); do
    pv=$("${kc[@]}" -n "$ns" get pvc "data$i" -o jsonpath='{.spec.volumeName}')
    "$coffer" --repo "$work/cli-repo-$ns" volume backup "$work/cluster/storage/volumes/$pv" --fs --json >/dev/null
  done
  cli=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
  printf '%s\t%s x %s MiB\toperator %s s\tcli %s s\n' "$ns" "$count" "$SIZE_MIB" "$op" "$cli"
  echo "$count $op $cli" >>"$work/results"
}

echo "==> one PVC of $SIZE_MIB MiB" >&2
run_case one 1
echo "==> four PVCs of $SIZE_MIB MiB" >&2
run_case four 4

echo "==> restoring the first case through a Restore (the populator)" >&2
printf 'apiVersion: coffer.dev/v1alpha1\nkind: Restore\nmetadata: {name: r1, namespace: one}\nspec: {backup: b1, namespaceMapping: {one: one-restored}}\n' | "${kc[@]}" apply -f - >/dev/null
t0=$(now)
while :; do
  phase=$("${kc[@]}" -n one get restore r1 -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case $phase in Completed) break ;; Failed|PartiallyFailed|Canceled)
    "${kc[@]}" -n one get restore r1 -o yaml >&2; exit 1 ;; esac
  sleep 0.1
done
restore_op=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
snap=$("${kc[@]}" -n one get backup b1 -o jsonpath='{.status.volumes[0].snapshotId}')
pv=$("${kc[@]}" -n one-restored get pvc data1 -o jsonpath='{.spec.volumeName}')
cmp "$work/cluster/storage/volumes/$pv/data.bin" \
  "$work/cluster/storage/volumes/$("${kc[@]}" -n one get pvc data1 -o jsonpath='{.spec.volumeName}')/data.bin" \
  || { echo "the restored volume differs" >&2; exit 1; }
rm -rf "$work/cli-restore"
t0=$(now)
COFFER_PASSWORD=bench COFFER_CACHE_DIR=$work/cache-cli "$coffer" --repo "$work/repo-one" volume restore "$snap" --target "$work/cli-restore" >/dev/null
restore_cli=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
printf 'restore\t1 x %s MiB\toperator %s s\tcli %s s\n' "$SIZE_MIB" "$restore_op" "$restore_cli"

wait_restore() { # NS NAME -> prints seconds from now to Completed
  local ns=$1 name=$2 t0 phase
  t0=$(now)
  while :; do
    phase=$("${kc[@]}" -n "$ns" get restore "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    case $phase in Completed) break ;; Failed|PartiallyFailed|Canceled)
      "${kc[@]}" -n "$ns" get restore "$name" -o yaml >&2; exit 1 ;; esac
    sleep 0.1
  done
  python3 -c "print(f'{$(now) - $t0:.2f}')"
}
echo "==> a Block PVC of $SIZE_MIB MiB: restored whole, then in place after a 1% change" >&2
{
  printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: blk}\n---\n'
  printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: key, namespace: blk}\nstringData: {password: bench}\n---\n'
  printf 'apiVersion: coffer.dev/v1alpha1\nkind: BackupRepository\nmetadata: {name: main, namespace: blk}\nspec: {location: "%s/repo-blk", keySecret: {name: key}, initialize: true}\n---\n' "$work"
  printf 'apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: disk, namespace: blk, labels: {app: bench}}\nspec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: %sMi}}}\n' "$SIZE_MIB"
} | "${kc[@]}" apply -f - >/dev/null
for _ in $(seq 300); do
  pv=$("${kc[@]}" -n blk get pvc disk -o jsonpath='{.spec.volumeName}')
  [ -n "$pv" ] && break
  sleep 0.2
done
img=$work/cluster/storage/volumes/$pv.img
head -c "$((SIZE_MIB << 20))" /dev/urandom | dd of="$img" conv=notrunc status=none
for _ in $(seq 300); do
  [ "$("${kc[@]}" -n blk get backuprepository main -o jsonpath='{.status.phase}')" = Ready ] && break
  sleep 0.2
done
printf 'apiVersion: coffer.dev/v1alpha1\nkind: Backup\nmetadata: {name: b1, namespace: blk}\nspec: {selection: {labelSelector: {matchLabels: {app: bench}}}, repository: {name: main}}\n' | "${kc[@]}" apply -f - >/dev/null
wait_backup blk b1 >/dev/null
printf 'apiVersion: coffer.dev/v1alpha1\nkind: Restore\nmetadata: {name: whole, namespace: blk}\nspec: {backup: b1, namespaceMapping: {blk: blk-copy}}\n' | "${kc[@]}" apply -f - >/dev/null
block_full=$(wait_restore blk whole)
copy=$work/cluster/storage/volumes/$("${kc[@]}" -n blk-copy get pvc disk -o jsonpath='{.spec.volumeName}').img
cmp "$img" "$copy" || { echo "the restored Block volume differs" >&2; exit 1; }
# 1% of the volume overwritten, in 1 MiB pieces spread over it.
changed=$((SIZE_MIB / 100 > 0 ? SIZE_MIB / 100 : 1))
for i in $(seq 0 $((changed - 1))); do
  dd if=/dev/urandom of="$img" bs=1M count=1 seek=$((i * SIZE_MIB / changed)) conv=notrunc status=none
done
printf 'apiVersion: coffer.dev/v1alpha1\nkind: Restore\nmetadata: {name: back, namespace: blk}\nspec: {backup: b1, mode: inPlace}\n' | "${kc[@]}" apply -f - >/dev/null
block_delta=$(wait_restore blk back)
cmp "$img" "$copy" || { echo "the volume restored in place differs from the backup" >&2; exit 1; }
delta_written=$("${kc[@]}" -n blk get restore back -o jsonpath='{.status.volumes[0].bytesWritten}')
printf 'block\t1 x %s MiB\tfull %s s\tin place after %s MiB changed %s s (%s bytes written)\n' "$SIZE_MIB" "$block_full" "$changed" "$block_delta" "$delta_written"

echo "==> $OBJECTS ConfigMaps" >&2
python3 - "$OBJECTS" >"$work/objects.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print("apiVersion: v1\nkind: Namespace\nmetadata: {name: objects}")
for i in range(n):
    print(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:05}, namespace: objects}}\ndata: {{key: value-{i}, other: '{'x' * 200}'}}")
PY
"${kc[@]}" apply --server-side -f "$work/objects.yaml" >/dev/null
printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: key, namespace: objects}\nstringData: {password: bench}\n---\napiVersion: coffer.dev/v1alpha1\nkind: BackupRepository\nmetadata: {name: main, namespace: objects}\nspec: {location: "%s/repo-objects", keySecret: {name: key}, initialize: true}\n' "$work" | "${kc[@]}" apply -f - >/dev/null
for _ in $(seq 300); do
  [ "$("${kc[@]}" -n objects get backuprepository main -o jsonpath='{.status.phase}')" = Ready ] && break
  sleep 0.2
done
pid=$(leader_pid)
before_hwm=$(hwm "$pid")
printf 'apiVersion: coffer.dev/v1alpha1\nkind: Backup\nmetadata: {name: b1, namespace: objects}\nspec: {repository: {name: main}}\n' | "${kc[@]}" apply -f - >/dev/null
objects_s=$(wait_backup objects b1)
objects_hwm=$(hwm "$pid")
stored=$("${kc[@]}" -n objects get backup b1 -o jsonpath='{.status.progress.objects}')

echo
echo "summary (machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB)"
while read -r count op cli; do
  echo "  $count x $SIZE_MIB MiB: Backup created -> Completed $op s; coffer volume backup alone $cli s"
done <"$work/results"
echo "  1 x $SIZE_MIB MiB restored: Restore created -> Completed (populator, data compared) $restore_op s; coffer volume restore alone $restore_cli s"
echo "  Block PVC of $SIZE_MIB MiB: restored whole by a Restore $block_full s; in place after $changed MiB changed $block_delta s ($delta_written bytes written)"
echo "  operator RSS idle: $idle_rss MiB; peak before the objects backup $before_hwm MiB, after backing up $stored objects ($objects_s s): $objects_hwm MiB"
