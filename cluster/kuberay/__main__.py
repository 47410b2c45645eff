"""Writes cluster/kuberay/rayservice-<region>.yaml from cluster/serve/regions/<region>.yaml.

    python -m cluster.kuberay
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
REGIONS = HERE.parent / "serve" / "regions"

TEMPLATE = """# KubeRay RayService of region `{region}`. serveConfigV2 is cluster/serve/regions/{region}.yaml verbatim;
# change that file and regenerate this one (python -m cluster.kuberay), never edit it by hand.
apiVersion: ray.io/v1
kind: RayService
metadata:
  name: pitboss-{region}
  labels:
    app.kubernetes.io/name: pitboss
    pitboss.dev/region: {region}
spec:
  serviceUnhealthySecondThreshold: 120
  deploymentUnhealthySecondThreshold: 120
  serveConfigV2: |
{serve_config}
  rayClusterConfig:
    rayVersion: "2.60.0"
    enableInTreeAutoscaling: true
    headGroupSpec:
      rayStartParams:
        dashboard-host: "0.0.0.0"
        num-cpus: "0"
      template:
        spec:
          containers:
            - name: ray-head
              image: ghcr.io/pitboss/pitboss:latest
              env: &pitboss-env
                - name: RAY_SERVE_ENABLE_HA_PROXY
                  value: "1"
                - name: RAY_SERVE_THROUGHPUT_OPTIMIZED
                  value: "1"
                # Replica logs written at once, not after 1,000 buffered records (the throughput mode's default).
                - name: RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE
                  value: "1"
                - name: PITBOSS_CASSANDRA_CONTACT_POINTS
                  valueFrom:
                    configMapKeyRef: {{name: pitboss-{region}, key: cassandra_contact_points}}
                - name: PITBOSS_CASSANDRA_PASSWORD
                  valueFrom:
                    secretKeyRef: {{name: pitboss-{region}, key: cassandra_password}}
                - name: PITBOSS_RABBITMQ_URL
                  valueFrom:
                    secretKeyRef: {{name: pitboss-{region}, key: rabbitmq_url}}
                - name: PITBOSS_REDIS_URL
                  valueFrom:
                    secretKeyRef: {{name: pitboss-{region}, key: redis_url}}
              resources:
                limits: {{cpu: "4", memory: 8Gi}}
                requests: {{cpu: "2", memory: 8Gi}}
              ports:
                - {{containerPort: 6379, name: gcs}}
                - {{containerPort: 8265, name: dashboard}}
                - {{containerPort: 8000, name: serve}}
    workerGroupSpecs:
      - groupName: workers
        replicas: 3
        minReplicas: 2
        maxReplicas: 20
        rayStartParams: {{}}
        template:
          spec:
            containers:
              - name: ray-worker
                image: ghcr.io/pitboss/pitboss:latest
                env: *pitboss-env
                resources:
                  limits: {{cpu: "8", memory: 16Gi}}
                  requests: {{cpu: "8", memory: 16Gi}}
"""


def render(region: str) -> str:
    serve = (REGIONS / f"{region}.yaml").read_text()
    body = "\n".join(("    " + line) if line else "" for line in serve.splitlines())
    return TEMPLATE.format(region=region, serve_config=body)


def main() -> None:
    for path in sorted(REGIONS.glob("*.yaml")):
        out = HERE / f"rayservice-{path.stem}.yaml"
        out.write_text(render(path.stem))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
