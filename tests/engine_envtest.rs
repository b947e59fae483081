//! The plan engine against a real Kubernetes API server (scripts/envtest): plans run to
//! completion in the declared order, failures are reported where KUDO reports them, and a
//! killed manager resumes without re-running finished steps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Namespace, apply_yaml, client, eventually, install_crds, make_workloads_ready};
use kube::api::{Api, Patch, PatchParams};
use kudo::api::{ExecutionStatus, Instance};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

const OPERATOR_VERSION: &str = r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata:
  name: shop-1.0.0
spec:
  operator: {name: shop, kind: Operator}
  version: "1.0.0"
  parameters:
    - {name: REPLICAS, default: "2", value-type: integer}
    - {name: GREETING, default: "hello"}
    - {name: FAIL_JOB, default: "false", value-type: boolean}
  tasks:
    - {name: config, kind: Apply, spec: {resources: [config.yaml]}}
    - {name: app, kind: Apply, spec: {resources: [app.yaml]}}
    - {name: db, kind: Apply, spec: {resources: [db.yaml]}}
    - {name: migrate, kind: Apply, spec: {resources: [migrate.yaml]}}
  plans:
    deploy:
      strategy: serial
      phases:
        - name: base
          strategy: serial
          steps: [{name: config, tasks: [config]}]
        - name: workloads
          strategy: parallel
          steps:
            - {name: app, tasks: [app]}
            - {name: db, tasks: [db]}
        - name: finish
          steps: [{name: migrate, tasks: [migrate]}]
  templates:
    config.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: {{ .Name }}-config
      data:
        greeting: {{ .Params.GREETING | quote }}
        step: {{ .StepName }}
    app.yaml: |
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: {{ .Name }}-app
      spec:
        replicas: {{ .Params.REPLICAS }}
        selector: {matchLabels: {app: shop}}
        template:
          metadata: {labels: {app: shop}}
          spec:
            containers: [{name: app, image: "nginx:1.25"}]
    db.yaml: |
      apiVersion: apps/v1
      kind: StatefulSet
      metadata:
        name: {{ .Name }}-db
      spec:
        replicas: 1
        serviceName: db
        selector: {matchLabels: {app: db}}
        template:
          metadata: {labels: {app: db}}
          spec:
            containers: [{name: db, image: "postgres:16"}]
    migrate.yaml: |
      apiVersion: batch/v1
      kind: Job
      metadata:
        name: {{ .Name }}-migrate
        annotations:
          test.kudo.dev/fail: {{ .Params.FAIL_JOB | quote }}
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: migrate, image: "busybox"}]
"#;

fn instance_yaml(name: &str, params: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  labels: {{kudo.dev/operator: shop}}\nspec:\n  operatorVersion: {{name: shop-1.0.0}}\n  parameters: {params}\n"
    )
}

async fn setup(prefix: &str) -> (kube::Client, Namespace) {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, prefix).await;
    (c, ns)
}

/// Runs the engine in-process for one namespace; dropped with the returned sender.
fn start_manager(c: &kube::Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let cluster = Arc::new(kudo::cluster::Cluster::from_client("envtest-1", c.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run(
        cluster,
        Some(ns.to_string()),
        Duration::from_millis(200),
        async move {
            let _ = rx.await;
        },
    ));
    tx
}

async fn plan_status(api: &Api<Instance>, name: &str, plan: &str) -> Option<kudo::api::PlanStatus> {
    api.get(name)
        .await
        .ok()?
        .status?
        .plan_status
        .get(plan)
        .cloned()
}

fn step_status(plan: &kudo::api::PlanStatus, step: &str) -> Option<ExecutionStatus> {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find(|s| s.name == step)
        .and_then(|s| s.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_phase_plan_runs_to_complete_in_order() {
    let (c, ns) = setup("engine-plan").await;
    apply_yaml(&c, &ns.name, OPERATOR_VERSION).await;
    apply_yaml(&c, &ns.name, &instance_yaml("shop", "{REPLICAS: \"3\"}")).await;
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);

    // Phase "workloads" starts both parallel steps; "finish" waits for them.
    eventually("app and db steps in progress", TIMEOUT, || async {
        let p = plan_status(&instances, "shop", "deploy").await?;
        (step_status(&p, "app") == Some(ExecutionStatus::InProgress)
            && step_status(&p, "db") == Some(ExecutionStatus::InProgress))
        .then_some(())
    })
    .await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        jobs.get_opt("shop-migrate")
            .await
            .expect("get job")
            .is_none(),
        "the serial plan must not start phase finish before workloads is complete"
    );
    let p = plan_status(&instances, "shop", "deploy")
        .await
        .expect("status");
    assert_eq!(step_status(&p, "config"), Some(ExecutionStatus::Complete));
    assert_eq!(step_status(&p, "migrate"), Some(ExecutionStatus::Pending));

    let done = eventually("deploy COMPLETE", TIMEOUT, || async {
        make_workloads_ready(&c, &ns.name).await;
        let p = plan_status(&instances, "shop", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    for phase in &done.phases {
        assert_eq!(phase.status, Some(ExecutionStatus::Complete), "{phase:?}");
    }
    assert!(done.last_updated_timestamp.is_some());

    // Rendered objects carry kudo's labels, annotations and owner reference.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), &ns.name);
    let app = deployments.get("shop-app").await.expect("deployment");
    let labels = app.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("heritage").map(String::as_str), Some("kudo"));
    assert_eq!(
        labels.get("kudo.dev/instance").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        labels.get("kudo.dev/operator").map(String::as_str),
        Some("shop")
    );
    let ann = app.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("kudo.dev/phase").map(String::as_str),
        Some("workloads")
    );
    assert_eq!(ann.get("kudo.dev/step").map(String::as_str), Some("app"));
    assert_eq!(app.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let owner = &app.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(owner.kind, "Instance");
    assert_eq!(owner.name, "shop");
    let pod_labels = app
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        pod_labels.get("kudo.dev/instance").map(String::as_str),
        Some("shop")
    );

    let inst = instances.get("shop").await.expect("instance");
    let ready = inst
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(inst.spec.plan_execution.plan_name, "deploy");
    assert_eq!(
        inst.spec.plan_execution.status,
        Some(ExecutionStatus::Complete)
    );

    // A parameter change with no trigger and no update plan runs deploy again, new uid.
    // Objects the change does not touch are applied again without a write.
    let app_version = app.metadata.resource_version.clone();
    let first_uid = done.uid.clone();
    instances
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"parameters": {"GREETING": "bonjour"}}})),
        )
        .await
        .expect("patch params");
    let again = eventually("second deploy COMPLETE", TIMEOUT, || async {
        make_workloads_ready(&c, &ns.name).await;
        let p = plan_status(&instances, "shop", "deploy").await?;
        (p.uid != first_uid && p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    assert_ne!(again.uid, first_uid);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let cm = cms.get("shop-config").await.expect("configmap");
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("bonjour")
    );
    let app_after = deployments.get("shop-app").await.expect("deployment");
    assert_eq!(
        app_after.metadata.resource_version, app_version,
        "an unchanged, healthy Deployment is re-applied without a write"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_where_kudo_reports_them() {
    let (c, ns) = setup("engine-fail").await;
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let _stop = start_manager(&c, &ns.name);

    // An Instance whose OperatorVersion does not exist yet: said so, then retried.
    apply_yaml(&c, &ns.name, &instance_yaml("early", "{}")).await;
    let msg = eventually("missing OperatorVersion reported", TIMEOUT, || async {
        let inst = instances.get("early").await.ok()?;
        let cond = inst
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.reason == "OperatorVersionNotFound").then_some(cond.message)
    })
    .await;
    assert!(msg.contains("shop-1.0.0"), "{msg}");
    apply_yaml(&c, &ns.name, OPERATOR_VERSION).await;
    eventually(
        "deploy runs once the OperatorVersion appears",
        TIMEOUT,
        || async {
            let p = plan_status(&instances, "early", "deploy").await?;
            p.status.is_some().then_some(())
        },
    )
    .await;

    // Parameters of the wrong type: rejected before anything is applied, all listed.
    apply_yaml(
        &c,
        &ns.name,
        &instance_yaml("badparams", "{REPLICAS: \"three\", FAIL_JOB: \"maybe\"}"),
    )
    .await;
    let msg = eventually("invalid parameters reported", TIMEOUT, || async {
        let inst = instances.get("badparams").await.ok()?;
        let cond = inst
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.reason == "InvalidParameters").then_some(cond.message)
    })
    .await;
    assert!(
        msg.contains("REPLICAS") && msg.contains("FAIL_JOB"),
        "{msg}"
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        cms.get_opt("badparams-config")
            .await
            .expect("get")
            .is_none()
    );

    // A failed Job: FATAL_ERROR up the tree.
    apply_yaml(
        &c,
        &ns.name,
        &instance_yaml("failing", "{FAIL_JOB: \"true\"}"),
    )
    .await;
    let p = eventually("failed job is fatal", TIMEOUT, || async {
        make_workloads_ready(&c, &ns.name).await;
        let p = plan_status(&instances, "failing", "deploy").await?;
        (p.status == Some(ExecutionStatus::FatalError)).then_some(p)
    })
    .await;
    assert_eq!(
        step_status(&p, "migrate"),
        Some(ExecutionStatus::FatalError)
    );
    assert!(p.message.contains("failing-migrate"), "{}", p.message);

    // A template that fails to render (KUDO's rendering-error-plan-failed).
    apply_yaml(
        &c,
        &ns.name,
        r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: broken-1}
spec:
  tasks: [{name: t, kind: Apply, spec: {resources: [bad.yaml]}}]
  plans:
    deploy:
      phases: [{name: p, steps: [{name: s, tasks: [t]}]}]
  templates:
    bad.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: x
      data:
        a: {{ .Params.NonExisting }}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: broken}
spec:
  operatorVersion: {name: broken-1}
"#,
    )
    .await;
    let p = eventually("render error is fatal", TIMEOUT, || async {
        let p = plan_status(&instances, "broken", "deploy").await?;
        (p.status == Some(ExecutionStatus::FatalError)).then_some(p)
    })
    .await;
    assert_eq!(p.phases[0].status, Some(ExecutionStatus::FatalError));
    let step_msg = &p.phases[0].steps[0].message;
    assert!(
        step_msg.contains("bad.yaml") && step_msg.contains("NonExisting"),
        "{step_msg}"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_manager_resumes_without_rerunning_finished_steps() {
    let (c, ns) = setup("engine-restart").await;
    apply_yaml(&c, &ns.name, OPERATOR_VERSION).await;
    apply_yaml(&c, &ns.name, &instance_yaml("shop", "{}")).await;
    let kubeconfig = common::envtest_kubeconfig();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
            .args([
                "manager",
                "--context",
                "envtest-1",
                "--poll-interval",
                "200ms",
                "--namespace",
            ])
            .arg(&ns.name)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kudo manager")
    };
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let mut manager = spawn();
    let before = eventually("config done, workloads waiting", TIMEOUT, || async {
        let p = plan_status(&instances, "shop", "deploy").await?;
        (step_status(&p, "config") == Some(ExecutionStatus::Complete)
            && step_status(&p, "app") == Some(ExecutionStatus::InProgress))
        .then_some(p)
    })
    .await;
    manager.kill().expect("kill manager");
    let _ = manager.wait();

    // Someone else takes over a field of the finished step's ConfigMap. Re-running that step
    // would take it back (kudo applies with force), so the value proves whether it re-ran.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    cms.patch(
        "shop-config",
        &PatchParams::apply("tester").force(),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "shop-config"},
            "data": {"greeting": "changed-by-tester"}
        })),
    )
    .await
    .expect("tester apply");
    // Drift repair would take the field back too once the plan completes: off here, so the
    // value speaks only about re-running steps.
    instances
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"kudo.dev/self-heal": "false"}}})),
        )
        .await
        .expect("self-heal off");

    let mut manager = spawn();
    let after = eventually("deploy COMPLETE after restart", TIMEOUT, || async {
        make_workloads_ready(&c, &ns.name).await;
        let p = plan_status(&instances, "shop", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    manager.kill().expect("kill manager");
    let _ = manager.wait();
    assert_eq!(after.uid, before.uid, "the same plan run resumed");
    let cm = cms.get("shop-config").await.expect("configmap");
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("changed-by-tester"),
        "the finished step config ran again after the restart"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kudo_operator_task_runs_a_child_instance_to_completion() {
    let (c, ns) = setup("engine-child").await;
    apply_yaml(
        &c,
        &ns.name,
        r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: child-0.1.0}
spec:
  operator: {name: child, kind: Operator}
  version: "0.1.0"
  parameters: [{name: SIZE, default: "1"}]
  tasks: [{name: cm, kind: Apply, spec: {resources: [cm.yaml]}}]
  plans:
    deploy: {phases: [{name: main, steps: [{name: cm, tasks: [cm]}]}]}
  templates:
    cm.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: "{{ .Name }}-cm"}
      data: {size: "{{ .Params.SIZE }}"}
---
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: child-0.0.9}
spec:
  operator: {name: child, kind: Operator}
  version: "0.0.9"
  plans:
    deploy: {phases: [{name: main, steps: [{name: never, tasks: [never]}]}]}
  tasks: [{name: never, kind: Dummy, spec: {wantErr: true, fatal: true}}]
---
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: parent-0.1.0}
spec:
  operator: {name: parent, kind: Operator}
  version: "0.1.0"
  parameters: [{name: CHILD_SIZE, default: "3"}]
  tasks:
    - name: deploy-child
      kind: KudoOperator
      spec: {package: child, parameterFile: child-params.yaml}
  plans:
    deploy: {phases: [{name: main, steps: [{name: deploy, tasks: [deploy-child]}]}]}
  templates:
    child-params.yaml: |
      SIZE: {{ .Params.CHILD_SIZE | quote }}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: dummy-instance, labels: {kudo.dev/operator: parent}}
spec:
  operatorVersion: {name: parent-0.1.0}
"#,
    )
    .await;
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    eventually("parent deploy COMPLETE", TIMEOUT, || async {
        let p = plan_status(&instances, "dummy-instance", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(())
    })
    .await;
    // The child ran its own deploy plan first, on the highest version, with the parameters
    // the parent rendered for it.
    let child = plan_status(&instances, "dummy-instance-child", "deploy")
        .await
        .expect("child status");
    assert_eq!(child.status, Some(ExecutionStatus::Complete));
    let child_obj = instances.get("dummy-instance-child").await.expect("child");
    assert_eq!(
        child_obj.spec.operator_version.name.as_deref(),
        Some("child-0.1.0")
    );
    assert_eq!(
        child_obj.spec.parameters.get("SIZE").map(String::as_str),
        Some("3")
    );
    let owner = &child_obj
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()[0];
    assert_eq!(owner.name, "dummy-instance");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let cm = cms
        .get("dummy-instance-child-cm")
        .await
        .expect("child's configmap");
    assert_eq!(
        cm.data.unwrap_or_default().get("size").map(String::as_str),
        Some("3")
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_retry_and_step_timeout_on_a_real_cluster() {
    let (c, ns) = setup("engine-cancel").await;
    apply_yaml(
        &c,
        &ns.name,
        r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: web-1}
spec:
  operator: {name: web, kind: Operator}
  parameters: [{name: TIMEOUT, default: "1h"}]
  tasks: [{name: web, kind: Apply, spec: {resources: [web.yaml]}}]
  plans:
    deploy:
      phases:
        - name: main
          steps: [{name: web, tasks: [web], timeout: 3s}]
    slow:
      phases:
        - name: main
          steps: [{name: web, tasks: [web]}]
  templates:
    web.yaml: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: "{{ .Name }}"}
      spec:
        replicas: 3
        selector: {matchLabels: {app: web}}
        template:
          metadata: {labels: {app: web}}
          spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: web}
spec:
  operatorVersion: {name: web-1}
"#,
    )
    .await;
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);

    // The Deployment rolls out but only 1 of its 3 replicas becomes available (as its
    // controller would report): the step times out, naming what is unhealthy and why.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), &ns.name);
    let p = eventually("step timeout", TIMEOUT, || async {
        if let Ok(Some(d)) = deployments.get_opt("web").await {
            let status = json!({"status": {
                "observedGeneration": d.metadata.generation,
                "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}});
            let _ = deployments
                .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
        let p = plan_status(&instances, "web", "deploy").await?;
        (p.status == Some(ExecutionStatus::FatalError)).then_some(p)
    })
    .await;
    let msg = &p.phases[0].steps[0].message;
    assert!(
        msg.contains("timed out after 3s")
            && msg.contains(&format!(
                "Deployment {}/web: 1 of 3 replicas available",
                ns.name
            )),
        "{msg}"
    );
    let kudo = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
            .args(args)
            .args([
                "--namespace",
                &ns.name,
                "--context",
                "envtest-1",
                "--kubeconfig",
            ])
            .arg(common::envtest_kubeconfig())
            .output()
            .expect("run kudo")
    };
    // Nothing is running now: cancel says so.
    let out = kudo(&["plan", "cancel", "--instance", "web"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no running plan"), "{stderr}");

    // A manual trigger of the plan without a timeout, then cancel and retry mid-plan.
    instances
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"planExecution": {"planName": "slow", "uid": null}}})),
        )
        .await
        .expect("trigger slow");
    let running = eventually("slow plan running", TIMEOUT, || async {
        let p = plan_status(&instances, "web", "slow").await?;
        (p.status == Some(ExecutionStatus::InProgress)).then_some(p)
    })
    .await;
    let request = |action: &'static str| {
        let out = kudo(&["plan", action, "--instance", "web"]);
        assert!(
            out.status.success(),
            "kudo plan {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    request("cancel");
    eventually("plan cancelled", TIMEOUT, || async {
        let p = plan_status(&instances, "web", "slow").await?;
        (p.status == Some(ExecutionStatus::Cancelled)).then_some(())
    })
    .await;
    request("retry");
    let done = eventually("retried plan completes", TIMEOUT, || async {
        make_workloads_ready(&c, &ns.name).await;
        let p = plan_status(&instances, "web", "slow").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    assert_eq!(done.uid, running.uid, "retry continues the same run");
    let inst = instances.get("web").await.expect("instance");
    assert!(
        !inst
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kudo.dev/plan-request"),
        "the manager removes a request it has carried out"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_prunes_removed_templates_and_deletion_removes_cluster_scoped_objects() {
    let (c, ns) = setup("engine-prune").await;
    let role = format!("{}-reader", ns.name);
    let version = |v: &str, templates: &[&str]| {
        let mut all = String::new();
        for t in templates {
            all.push_str(&format!("    {t}.yaml: |\n"));
            let body = match *t {
                "role" => format!(
                    "      apiVersion: rbac.authorization.k8s.io/v1\n      kind: ClusterRole\n      metadata: {{name: {role}}}\n      rules: [{{apiGroups: [\"\"], resources: [pods], verbs: [get]}}]\n"
                ),
                other => format!(
                    "      apiVersion: v1\n      kind: ConfigMap\n      metadata: {{name: {other}}}\n      data: {{v: \"{v}\"}}\n"
                ),
            };
            all.push_str(&body);
        }
        let resources = templates
            .iter()
            .map(|t| format!("{t}.yaml"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "apiVersion: kudo.dev/v1beta1\nkind: OperatorVersion\nmetadata: {{name: pr-{v}}}\nspec:\n  operator: {{name: pr, kind: Operator}}\n  version: \"{v}\"\n  tasks: [{{name: all, kind: Apply, spec: {{resources: [{resources}]}}}}]\n  plans:\n    deploy: {{phases: [{{name: main, steps: [{{name: all, tasks: [all]}}]}}]}}\n  templates:\n{all}"
        )
    };
    apply_yaml(&c, &ns.name, &version("1", &["old-cm", "role"])).await;
    apply_yaml(&c, &ns.name, &version("2", &["new-cm", "role"])).await;
    apply_yaml(
        &c,
        &ns.name,
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata: {name: pr, labels: {kudo.dev/operator: pr}}\nspec:\n  operatorVersion: {name: pr-1}\n",
    )
    .await;
    // A person's ConfigMap that carries the instance's labels.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    cms.patch(
        "handmade",
        &PatchParams::apply("person"),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "handmade", "labels": {
                "heritage": "kudo", "kudo.dev/operator": "pr", "kudo.dev/instance": "pr"}},
            "data": {"mine": "yes"}
        })),
    )
    .await
    .expect("handmade configmap");
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let first = eventually("v1 deployed", TIMEOUT, || async {
        let p = plan_status(&instances, "pr", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    assert!(cms.get_opt("old-cm").await.expect("get").is_some());

    instances
        .patch(
            "pr",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"operatorVersion": {"name": "pr-2"}}})),
        )
        .await
        .expect("upgrade");
    eventually("v2 deployed and old-cm pruned", TIMEOUT, || async {
        let p = plan_status(&instances, "pr", "deploy").await?;
        let done = p.uid != first.uid && p.status == Some(ExecutionStatus::Complete);
        (done && cms.get_opt("old-cm").await.ok()?.is_none()).then_some(())
    })
    .await;
    assert!(cms.get_opt("new-cm").await.expect("get").is_some());
    assert!(
        cms.get_opt("handmade").await.expect("get").is_some(),
        "an object kudo did not apply is never pruned"
    );
    let reported = eventually("handmade object reported", TIMEOUT, || async {
        let inst = instances.get("pr").await.ok()?;
        inst.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "UnmanagedObjects")
    })
    .await;
    assert!(
        reported.message.contains(&format!(
            "ConfigMap {}/handmade: not applied by kudo; left in place",
            ns.name
        )),
        "{reported:?}"
    );
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(c.clone());
    assert!(roles.get_opt(&role).await.expect("get").is_some());

    instances
        .delete("pr", &Default::default())
        .await
        .expect("delete instance");
    eventually("instance and its ClusterRole gone", TIMEOUT, || async {
        let gone = instances.get_opt("pr").await.ok()?.is_none()
            && roles.get_opt(&role).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_opt_out_keeps_objects_no_longer_rendered() {
    let (c, ns) = setup("engine-noprune").await;
    let version = |v: &str, cm: &str| {
        format!(
            "apiVersion: kudo.dev/v1beta1\nkind: OperatorVersion\nmetadata: {{name: np-{v}}}\nspec:\n  operator: {{name: np, kind: Operator}}\n  version: \"{v}\"\n  tasks: [{{name: all, kind: Apply, spec: {{resources: [cm.yaml]}}}}]\n  plans:\n    deploy: {{phases: [{{name: main, steps: [{{name: all, tasks: [all]}}]}}]}}\n  templates:\n    cm.yaml: |\n      apiVersion: v1\n      kind: ConfigMap\n      metadata: {{name: {cm}}}\n"
        )
    };
    apply_yaml(&c, &ns.name, &version("1", "old-cm")).await;
    apply_yaml(&c, &ns.name, &version("2", "new-cm")).await;
    apply_yaml(
        &c,
        &ns.name,
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: np\n  labels: {kudo.dev/operator: np}\n  annotations: {kudo.dev/prune: \"false\"}\nspec:\n  operatorVersion: {name: np-1}\n",
    )
    .await;
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let first = eventually("v1 deployed", TIMEOUT, || async {
        let p = plan_status(&instances, "np", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    instances
        .patch(
            "np",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"operatorVersion": {"name": "np-2"}}})),
        )
        .await
        .expect("upgrade");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    eventually("v2 deployed", TIMEOUT, || async {
        let p = plan_status(&instances, "np", "deploy").await?;
        let done = p.uid != first.uid && p.status == Some(ExecutionStatus::Complete);
        (done && cms.get_opt("new-cm").await.ok()?.is_some()).then_some(())
    })
    .await;
    // One more pass after completion (the drift check's) must not prune either.
    let seen = instances.get("np").await.expect("instance");
    let rv = seen.metadata.resource_version.clone();
    instances
        .patch(
            "np",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"poke": "1"}}})),
        )
        .await
        .expect("poke");
    eventually("instance re-read", TIMEOUT, || async {
        let i = instances.get("np").await.ok()?;
        (i.metadata.resource_version != rv).then_some(())
    })
    .await;
    assert!(
        cms.get_opt("old-cm").await.expect("get").is_some(),
        "kudo.dev/prune: \"false\" keeps what the new version no longer renders"
    );
    let inst = instances.get("np").await.expect("instance");
    let inventory = inst.status.expect("status").applied;
    assert!(
        inventory.iter().any(|o| o.name == "old-cm"),
        "the inventory still lists it, so turning pruning back on prunes it: {inventory:?}"
    );
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_task_waits_for_its_pod_and_later_templates_see_the_artifact_name() {
    let (c, ns) = setup("engine-pipe").await;
    apply_yaml(
        &c,
        &ns.name,
        r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: tls-1}
spec:
  operator: {name: tls, kind: Operator}
  tasks:
    - name: gen-cert
      kind: Pipe
      spec:
        pod: cert-pod.yaml
        pipe: [{file: /tmp/cert.pem, kind: Secret, key: Cert}]
    - {name: app, kind: Apply, spec: {resources: [app.yaml]}}
  plans:
    deploy:
      phases:
        - name: main
          steps:
            - {name: cert, tasks: [gen-cert]}
            - {name: app, tasks: [app]}
  templates:
    cert-pod.yaml: |
      apiVersion: v1
      kind: Pod
      metadata: {name: "{{ .Name }}-cert"}
      spec:
        containers:
          - name: gen
            image: alpine
            command: [sh, -c, "echo PEM > /tmp/cert.pem && sleep 3600"]
    app.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: "{{ .Name }}-app"}
      data: {certSecret: "{{ .Pipes.Cert }}"}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: web}
spec:
  operatorVersion: {name: tls-1}
"#,
    )
    .await;
    let _stop = start_manager(&c, &ns.name);
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    // No node runs the pod: the pipe step waits, in progress, not broken.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), &ns.name);
    let p = eventually("pipe pod created and step waiting", TIMEOUT, || async {
        let p = plan_status(&instances, "web", "deploy").await?;
        let pod = pods.get_opt("web-cert").await.ok()??;
        (step_status(&p, "cert") == Some(ExecutionStatus::InProgress) && pod.metadata.uid.is_some())
            .then_some(p)
    })
    .await;
    assert_eq!(p.status, Some(ExecutionStatus::InProgress));
    let msg = &p.phases[0].steps[0].message;
    assert!(
        msg.contains("pipe pod") && msg.contains("web-cert"),
        "{msg}"
    );

    // Once the artifact exists the pipe is done (never re-run), and the next template gets
    // its name through .Pipes.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), &ns.name);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web-gen-cert-cert"},
                "data": {"cert.pem": "UEVN"}
            }))
            .expect("secret"),
        )
        .await
        .expect("artifact");
    eventually("plan completes", TIMEOUT, || async {
        let p = plan_status(&instances, "web", "deploy").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(())
    })
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let cm = cms.get("web-app").await.expect("configmap");
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("certSecret")
            .map(String::as_str),
        Some("web-gen-cert-cert")
    );
    ns.cleanup().await;
}

/// A watch can hand the engine a copy of an Instance older than the engine's own last write
/// to it (the Instance event has not arrived yet, while an event of another kind, e.g. a
/// person's edit, already woke the Instance). A pass on that copy must neither start the
/// plan again (a new uid) nor run a finished step again (taking back the edit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_on_a_copy_older_than_the_engines_own_write_changes_nothing() {
    let (c, ns) = setup("engine-stale").await;
    apply_yaml(&c, &ns.name, OPERATOR_VERSION).await;
    apply_yaml(&c, &ns.name, &instance_yaml("shop", "{}")).await;
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), &ns.name);
    let engine = || {
        Arc::new(kudo::manager::reconcile::Context::new(
            Arc::new(kudo::cluster::Cluster::from_client("envtest-1", c.clone())),
            Duration::from_millis(200),
        ))
    };
    let ctx = engine();
    let pass = |copy: &Arc<Instance>, ctx: &Arc<kudo::manager::reconcile::Context>| {
        kudo::manager::reconcile::reconcile(copy.clone(), ctx.clone())
    };
    let greeting = || async {
        let cm = cms.get("shop-config").await.expect("configmap");
        cm.data.unwrap_or_default().get("greeting").cloned()
    };
    let replicas = || async {
        let d = deployments.get("shop-app").await.expect("deployment");
        d.spec.and_then(|s| s.replicas)
    };
    let tester = |api_version: &str, kind: &str, name: &str, body: serde_json::Value| {
        let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        obj.as_object_mut()
            .expect("object")
            .extend(body.as_object().expect("body").clone());
        obj
    };

    // Pass 1 starts the plan: config done (a ConfigMap), workloads waiting.
    let unstarted = Arc::new(instances.get("shop").await.expect("instance"));
    pass(&unstarted, &ctx).await.expect("pass 1");
    let first = plan_status(&instances, "shop", "deploy")
        .await
        .expect("plan started");
    assert_eq!(
        step_status(&first, "config"),
        Some(ExecutionStatus::Complete)
    );
    assert_eq!(
        step_status(&first, "app"),
        Some(ExecutionStatus::InProgress)
    );
    cms.patch(
        "shop-config",
        &PatchParams::apply("tester").force(),
        &Patch::Apply(tester(
            "v1",
            "ConfigMap",
            "shop-config",
            json!({"data": {"greeting": "changed-by-tester"}}),
        )),
    )
    .await
    .expect("tester edits the ConfigMap");
    // Woken with the copy from before the plan started.
    let _ = pass(&unstarted, &ctx).await;
    let now = plan_status(&instances, "shop", "deploy")
        .await
        .expect("plan");
    assert_eq!(now.uid, first.uid, "the plan was started again");
    assert_eq!(
        greeting().await.as_deref(),
        Some("changed-by-tester"),
        "step config ran again"
    );

    // Pass 2 on the current copy finishes the workloads step.
    let waiting = Arc::new(instances.get("shop").await.expect("instance"));
    make_workloads_ready(&c, &ns.name).await;
    pass(&waiting, &ctx).await.expect("pass 2");
    let second = plan_status(&instances, "shop", "deploy")
        .await
        .expect("plan");
    assert_eq!(step_status(&second, "app"), Some(ExecutionStatus::Complete));
    deployments
        .patch(
            "shop-app",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(tester(
                "apps/v1",
                "Deployment",
                "shop-app",
                json!({"spec": {"replicas": 7}}),
            )),
        )
        .await
        .expect("tester scales the Deployment");
    // Woken with the copy that still shows the workloads step running.
    let _ = pass(&waiting, &ctx).await;
    let now = plan_status(&instances, "shop", "deploy")
        .await
        .expect("plan");
    assert_eq!(now.uid, first.uid);
    assert_eq!(replicas().await, Some(7), "the finished step app ran again");

    // Another engine (a new leader) with the copy from before the plan started: the plan
    // start it would write is refused by the server, the copy not being the current one.
    let _ = pass(&unstarted, &engine()).await;
    let now = plan_status(&instances, "shop", "deploy")
        .await
        .expect("plan");
    assert_eq!(now.uid, first.uid, "another engine started the plan again");
    assert_eq!(greeting().await.as_deref(), Some("changed-by-tester"));
    ns.cleanup().await;
}
