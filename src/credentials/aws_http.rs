//! The HTTP client the AWS SDK uses: hyper over rustls with ring and the Mozilla root store
//! (which holds Amazon's roots), so pgvalet keeps one TLS stack and needs no system CA files.
//! Plain `http://` works too, for a local Secrets Manager such as moto or LocalStack.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::TokioExecutor;

type HyperClient = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

/// Builds connectors on demand, one per distinct timeout setting the SDK asks for.
#[derive(Debug, Clone, Default)]
pub struct RustlsHttpClient;

impl HttpClient for RustlsHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector::new(
            settings.connect_timeout(),
            settings.read_timeout(),
        ))
    }
}

#[derive(Debug, Clone)]
struct Connector {
    client: Arc<HyperClient>,
    read_timeout: Option<Duration>,
}

impl Connector {
    #[allow(
        clippy::expect_used,
        reason = "at start-up: ring supports rustls' default protocol versions"
    )]
    fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Connector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout.or(Some(Duration::from_secs(5))));
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Connector {
            client: Arc::new(client),
            read_timeout,
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let call = client.request(request);
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .map_err(|e| ConnectorError::timeout(e.into()))?,
                None => call.await,
            }
            .map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}
