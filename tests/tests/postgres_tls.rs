//! PostgreSQL over TLS: `sslmode=verify-full` with the test CA that
//! `scripts/setup-test-env.sh` installs (`TEST_POSTGRES_CA_FILE` overrides)
//! carries every connection over TLS; a CA that did not sign the server's
//! certificate refuses to start.

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, base_env};
use omninode_proto::stamping::v1 as pb;
use omninode_runtime::Env;
use sea_orm::{ConnectionTrait, Statement};

fn ca_file() -> String {
    std::env::var("TEST_POSTGRES_CA_FILE").unwrap_or_else(|_| {
        let cache =
            std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        format!("{cache}/omninode/postgres-ca.crt")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_verified_tls() {
    let ca = ca_file();
    assert!(std::path::Path::new(&ca).exists(), "{ca} is missing: run scripts/setup-test-env.sh");
    let database = TestDatabase::new(Backend::Postgres).await;
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        database.postgres.as_ref().unwrap().url.replace("127.0.0.1", "localhost")
    );
    let mesh = TestMesh::start_services(database.clone(), &[ServiceKind::Stamping], &[("DATABASE_URL", &url)]).await;
    let request =
        pb::StampRequest { namespace: "tls.db".into(), content: "stored over TLS".into(), ..Default::default() };
    mesh.stamping().await.stamp(request).await.expect("a stamp stored over TLS");
    let db = &mesh.mesh().database;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FILTER (WHERE NOT s.ssl), COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database()",
        ))
        .await
        .unwrap()
        .unwrap();
    let (plain, all): (i64, i64) = (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap());
    assert!(all > 0);
    assert_eq!(plain, 0, "{plain} of {all} connections without TLS");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_the_ca_did_not_sign_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let database = TestDatabase::new(Backend::Postgres).await;
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        database.postgres.as_ref().unwrap().url.replace("127.0.0.1", "localhost"),
        other_ca.display()
    );
    let mut env = Env::from_pairs(base_env()).with("DATABASE_URL", url);
    env = env.with("OMNINODE_DATA_DIR", database.data_dir.path().display().to_string());
    let refused =
        omninode::start(&env, &[ServiceKind::Stamping]).await.err().expect("an untrusted database is refused");
    assert!(format!("{refused:#}").contains("connect"), "{refused:#}");
}
