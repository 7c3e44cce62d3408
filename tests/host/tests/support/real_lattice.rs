//! The app as wadm deployed it on a real wasmCloud 1.x lattice, for
//! `make real-lattice-test` (`infra/wasmcloud/real-lattice-test.sh` deploys it first):
//! `SHOP_URL` is the gateway's address (default `http://127.0.0.1:8000`) and
//! `SHOP_DATABASE_URL` the deployment's database. Scenarios run one after another on that
//! one deployment: each starts by emptying the services' tables (the schema stays). A task
//! posts `/api/v1/admin/tick` every 50 ms, as the guide's ticker does.

use tokio::task::JoinHandle;

/// A deployment on a real lattice, cleared for one scenario.
pub struct RealLattice {
    /// The gateway's base URL.
    pub base: String,
    /// The deployment's database, without TLS.
    pub database_url: String,
    ticker: JoinHandle<()>,
}

impl RealLattice {
    /// Attaches to the deployment named by `SHOP_URL` and `SHOP_DATABASE_URL` (a role that
    /// may empty every service's schema) and empties the services' tables.
    pub async fn attach() -> RealLattice {
        let base = std::env::var("SHOP_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
        let database_url = std::env::var("SHOP_DATABASE_URL")
            .expect("SHOP_DATABASE_URL names the deployment's database (make real-lattice-test)");
        let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .expect("the deployment's database answers");
        tokio::spawn(connection);
        let schemas: Vec<String> = super::DATABASE_SERVICES
            .iter()
            .map(|service| format!("'{}'", super::service_role(service)))
            .collect();
        let tables: Vec<String> = client
            .query(
                &format!(
                    "SELECT schemaname || '.' || tablename FROM pg_tables \
                     WHERE schemaname IN ({}) AND tablename <> 'schema_migrations'",
                    schemas.join(", ")
                ),
                &[],
            )
            .await
            .expect("list tables")
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !tables.is_empty() {
            client
                .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
                .await
                .expect("empty the tables");
        }
        let ticker = tokio::spawn(super::served::tick(vec![base.clone()]));
        RealLattice {
            base,
            database_url,
            ticker,
        }
    }
}

impl Drop for RealLattice {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}
