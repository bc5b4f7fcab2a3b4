//! Gateway authentication (API keys, JWT HS256 and RS256) and CORS, against
//! real upstream servers.

use omninode_integration_tests::{Backend, ServiceKind, TestDatabase, TestMesh, http_request};

const ALL: &[ServiceKind] = &[ServiceKind::Stamping, ServiceKind::Gateway];

/// A test-only RSA key pair (2048 bits), generated for these tests.
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxBqVT1ltyevRDgtCVUYk\n7h9XaTbENtlixXF6HxBar9KIly9e3sCG8kVXdcAYtc5U++6+bD8VXnoOBsi9gInR\n7qLTm1Z7Q8pxJfsL9q9EpDV1YFSZHpX6lP24qE86ZtDsP5zuyMCs8qB6025afnki\nLq+t6WmAZ22LxueKBSWH/4sNl0gXoiI9m0ivd93thEWl06pkRs74CH+aXRXQSFXr\n5Kb2F1hNBRYDoYqVnBOXnzAk/pw+d6+dp+YNA6yuVZsHVq1gUlo5WeKzwVUhJw8F\n/Mvy6zniigy45VRvkTfRCorQYmt7QbYLlORgHw6+54wnFrNAEUlPo/wa7G2UUDEJ\ncQIDAQAB\n-----END PUBLIC KEY-----\n";
const RSA_PRIVATE_PEM: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDEGpVPWW3J69EO
C0JVRiTuH1dpNsQ22WLFcXofEFqv0oiXL17ewIbyRVd1wBi1zlT77r5sPxVeeg4G
yL2AidHuotObVntDynEl+wv2r0SkNXVgVJkelfqU/bioTzpm0Ow/nO7IwKzyoHrT
blp+eSIur63paYBnbYvG54oFJYf/iw2XSBeiIj2bSK933e2ERaXTqmRGzvgIf5pd
FdBIVevkpvYXWE0FFgOhipWcE5efMCT+nD53r52n5g0DrK5VmwdWrWBSWjlZ4rPB
VSEnDwX8y/LrOeKKDLjlVG+RN9EKitBia3tBtguU5GAfDr7njCcWs0ARSU+j/Brs
bZRQMQlxAgMBAAECggEAOagJMym7bk0vi14DFDhJ3lsHo68O9INol118RsrTpvMS
5sRuM7bOVkfN5Zhji3yNHv88LG5FtZ/UJOl7UeHzf6KO7ZJ5Ll7EcqLDizVPzKnN
B1QIKuZ0pL6OPqoApT8S3scgq5R+pN1LD4PYBmxOAQT08HXs4zvhh0sHGOlGeXqg
c2rZuhhQs805+K92dvWbfqFfHHboUTA1Kl3ybdv6NpBWoxdNoPnnFQwrXPMa2rKM
yowPW6pKO1hXIV+hVHz9tVDJQnfMA13ft3wOhHb85bFYa3U+21XoJ4wiTnWZrEU1
bIvU+iijhr3h7pMzOxuWOZ23UTBKOLkGHNDT0JPzywKBgQDiQdvlcO8esSOxSvBc
NgCLcloFnu2nFJL4BZXSEFdTWkUQMwm3vztXa+IZWBRncT91RvkxGY9l/EkZoRuh
8JPKmvebuAkyqA45hkVefYcpMyFMvW70W/ewGR19vpjbBZ7ZrUFw8q6rop3SK8MT
LONJRfzeNi6jCsqTigVJrpPJ2wKBgQDd4fva3U4bcFVX6OzBUnei/wh02HCibXNQ
yrABJOrKzq2V1p+NIatmi6QwSCLFQcOZyaDIFc79F0SemRauqSrk4fC8kW1uhaR5
al5/3DrRtHPPWRN5WxCY1MRV4LtZ7mCIKlKkSvSDUKxh2SkQRC9Ltr09GgL8kPda
GEQbBb15owKBgBvGM+U1eNUOr6/64AihxG1Zyz03ZjsFZok1vk98HAwqX6H+cenx
eqpfnvC3hEGygDS4Uqy5U4YUczDHOyok6y+K2GxwKgji4mQjXG6eADKJiUPvWSh8
BarDWoBuHjt8tCRKhWcFE3YUT0VWg+rdrsT253SruAvhrj5wSffii1fTAoGBAKdH
lXpnOFjFcwIo8D27r8iqH7T/7ML4Y2T4uoLSU1V9Ri9eNMHRLYjNJIbmC5jNwOrz
sQzILFpxLWGopwodLeKLWNTBi1A031BOWlppLcsmEd20GVN3zWZ7ml3oZTci2ZIu
3klQ3VEXBC9s6mGCFmotpjQnpTLHFETPYKFCzZujAoGBAN/zA7+OXiGWPzK4+t/1
L5TjUVURSKXJFWkpyzD50P8eKSnjJOzc6YUDdFCN3MGF3HJAKpTHXOu53nLkSoWb
4Ugek9HstotYBGtXRWTKmn4hAyoyC8Sw2ZqhRNsJK8sWCzOG+YHpK+VyJo0CgO7b
0HXfQG6AfAc9wj8tvTcnedop
-----END PRIVATE KEY-----";

async fn status(mesh: &TestMesh, headers: &[(&str, &str)]) -> u16 {
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    http_request(gateway, "GET", "/v1/namespaces/auth/stamps", headers, "").await.0
}

fn token(algorithm: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, exp_offset: i64, iss: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + exp_offset;
    let claims = serde_json::json!({"sub": "tester", "exp": exp, "iss": iss});
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_required_when_configured() {
    let mesh =
        TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &[("GATEWAY_API_KEYS", "alpha,beta")])
            .await;
    assert_eq!(status(&mesh, &[]).await, 401);
    assert_eq!(status(&mesh, &[("x-api-key", "gamma")]).await, 401);
    assert_eq!(status(&mesh, &[("x-api-key", "beta")]).await, 200);
    assert_eq!(status(&mesh, &[("authorization", "Bearer alpha")]).await, 200);
    // The API description stays public.
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    assert_eq!(http_request(gateway, "GET", "/openapi.json", &[], "").await.0, 200);
    let (code, _, body) = http_request(gateway, "GET", "/v1/namespaces/auth/stamps", &[], "").await;
    assert_eq!(code, 401);
    assert!(body.contains(r#""code":16"#), "{body}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_are_verified() {
    let vars =
        [("GATEWAY_JWT_HS256_SECRET", "a-test-secret-that-is-32-bytes-long"), ("GATEWAY_JWT_ISSUER", "omninode-tests")];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &vars).await;
    let good_key = jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-that-is-32-bytes-long");
    let bad_key = jsonwebtoken::EncodingKey::from_secret(b"another-secret");
    let hs = jsonwebtoken::Algorithm::HS256;
    let bearer = |t: String| format!("Bearer {t}");
    assert_eq!(status(&mesh, &[("authorization", &bearer(token(hs, &good_key, 300, "omninode-tests")))]).await, 200);
    assert_eq!(status(&mesh, &[("authorization", &bearer(token(hs, &bad_key, 300, "omninode-tests")))]).await, 401);
    assert_eq!(
        status(&mesh, &[("authorization", &bearer(token(hs, &good_key, -300, "omninode-tests")))]).await,
        401,
        "expired"
    );
    assert_eq!(
        status(&mesh, &[("authorization", &bearer(token(hs, &good_key, 300, "someone-else")))]).await,
        401,
        "issuer"
    );
    assert_eq!(status(&mesh, &[("authorization", "Bearer not.a.jwt")]).await, 401);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_are_verified() {
    let vars = [("GATEWAY_JWT_RS256_PUBLIC_KEY", RSA_PUBLIC_PEM)];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &vars).await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    let rs = jsonwebtoken::Algorithm::RS256;
    let good = format!("Bearer {}", token(rs, &key, 300, "x"));
    assert_eq!(status(&mesh, &[("authorization", &good)]).await, 200);
    let hs = format!(
        "Bearer {}",
        token(jsonwebtoken::Algorithm::HS256, &jsonwebtoken::EncodingKey::from_secret(b"x"), 300, "x")
    );
    assert_eq!(status(&mesh, &[("authorization", &hs)]).await, 401, "another algorithm is refused");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    let vars = [("GATEWAY_CORS_ORIGINS", "https://app.example")];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &vars).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let preflight = |origin: &'static str| {
        let headers = [("origin", origin), ("access-control-request-method", "POST")];
        async move { http_request(gateway, "OPTIONS", "/v1/validate", &headers, "").await }
    };
    let (_, headers, _) = preflight("https://app.example").await;
    assert!(
        headers.iter().any(|(k, v)| k == "access-control-allow-origin" && v == "https://app.example"),
        "{headers:?}"
    );
    let (_, headers, _) = preflight("https://evil.example").await;
    assert!(!headers.iter().any(|(k, _)| k == "access-control-allow-origin"), "{headers:?}");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let vars = [("GATEWAY_MAX_BODY_BYTES", "1024")];
    let mesh = TestMesh::start_services(TestDatabase::new(Backend::Sqlite).await, ALL, &vars).await;
    let gateway = mesh.mesh().endpoints.gateway.unwrap();
    let body = serde_json::json!({"content": "x".repeat(2000)}).to_string();
    let (code, _, _) =
        http_request(gateway, "POST", "/v1/validate", &[("content-type", "application/json")], &body).await;
    assert_eq!(code, 413);
    mesh.shutdown().await;
}
