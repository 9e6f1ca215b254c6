"""Writes OUT/objects.yaml: namespace NS and N objects in it, 40% ConfigMaps, 30% Secrets,
20% Services, 10% Deployments (0 replicas: no pods; each reads one ConfigMap).

Usage: gen_objects.py N OUT [NS]   (NS default: objects)
Used by bench/objects.sh and bench/objects-memory.sh."""
import os
import sys

n, out = int(sys.argv[1]), sys.argv[2]
ns = sys.argv[3] if len(sys.argv) > 3 else "objects"
os.makedirs(out, exist_ok=True)
kinds = [("cm", 0.4), ("secret", 0.3), ("svc", 0.2), ("deploy", 0.1)]
counts = [int(n * share) for _, share in kinds]
counts[0] += n - sum(counts)
f = open(f"{out}/objects.yaml", "w")
f.write(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
meta = lambda name, extra="": f"metadata: {{name: {name}, namespace: {ns}{extra}}}\n"
for (kind, _), count in zip(kinds, counts):
    for i in range(count):
        name = f"{kind}-{i:05d}"
        if kind == "cm":
            f.write(f"---\napiVersion: v1\nkind: ConfigMap\n{meta(name, f', labels: {{app: app-{i % 50}}}')}data: {{index: \"{i}\", url: \"postgres://db-{i % 50}.{ns}.svc:5432/app\"}}\n")
        elif kind == "secret":
            f.write(f"---\napiVersion: v1\nkind: Secret\n{meta(name)}type: Opaque\nstringData: {{password: \"p{i}\"}}\n")
        elif kind == "svc":
            f.write(f"---\napiVersion: v1\nkind: Service\n{meta(name)}spec: {{selector: {{app: app-{i % 50}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n")
        else:
            f.write(f"---\napiVersion: apps/v1\nkind: Deployment\n{meta(name)}spec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: busybox:1.36, command: [sleep, \"3600\"], env: [{{name: CONFIG, valueFrom: {{configMapKeyRef: {{name: cm-{i:05d}, key: index}}}}}}]}}]}}\n")
f.close()
