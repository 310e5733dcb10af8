//! The one task/queue lookup rule against the embedded server: ids first, exact names, then
//! names ignoring case, and several tasks of one name an error.

use std::time::Duration;

use clearml_api::lookup::{self, LookupError};
use clearml_api::{Client, ClientConfig};
use clearml_server::{Credential, Server, ServerConfig};
use serde_json::json;

async fn setup() -> (Server, tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.port = 0;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
    });
    let server = Server::start(config).await.expect("starts");
    let client = Client::new(ClientConfig {
        api_server: format!("http://{}", server.api_addr()),
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
        verify_certificate: true,
        method: "post".into(),
        worker: None,
        retry_for: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    (server, dir, client)
}

async fn create(client: &Client, endpoint: &str, name: &str) -> String {
    let r = client
        .call(endpoint, json!({"name": name, "type": "training"}))
        .await
        .expect("create");
    r["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn tasks_by_id_and_by_name_and_ties_are_errors() {
    let (_server, _dir, client) = setup().await;
    let one = create(&client, "tasks.create", "train (v1.0)").await;
    let found = lookup::task(&client, &one).await.expect("by id");
    assert_eq!(
        (found.id.as_str(), found.name.as_str()),
        (one.as_str(), "train (v1.0)")
    );
    let found = lookup::task(&client, "train (v1.0)")
        .await
        .expect("by name");
    assert_eq!(found.id, one);
    // Any case, when no name matches exactly.
    assert_eq!(
        lookup::task(&client, "TRAIN (V1.0)")
            .await
            .expect("any case")
            .id,
        one
    );

    let two = create(&client, "tasks.create", "train (v1.0)").await;
    match lookup::task(&client, "train (v1.0)").await {
        Err(LookupError::Ambiguous { ids, .. }) => {
            assert!(ids.contains(&one) && ids.contains(&two), "{ids:?}");
        }
        other => panic!("expected an ambiguity error, got {other:?}"),
    }
    // The id still picks one of them.
    assert_eq!(lookup::task(&client, &two).await.expect("by id").id, two);
    assert!(matches!(
        lookup::task(&client, "train").await,
        Err(LookupError::NotFound { .. })
    ));
}

#[tokio::test]
async fn queues_prefer_exact_names_then_any_case() {
    let (_server, _dir, client) = setup().await;
    let lower = create(&client, "queues.create", "gpu").await;
    let upper = create(&client, "queues.create", "GPU").await;
    assert_eq!(lookup::queue(&client, "gpu").await.expect("gpu").id, lower);
    assert_eq!(lookup::queue(&client, "GPU").await.expect("GPU").id, upper);
    // No exact match, two ignoring case: ambiguous.
    assert!(matches!(
        lookup::queue(&client, "Gpu").await,
        Err(LookupError::Ambiguous { .. })
    ));
    assert_eq!(
        lookup::queue(&client, &upper).await.expect("by id").name,
        "GPU"
    );
}
