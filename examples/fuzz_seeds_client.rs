//! A tokio-postgres client for `scripts/fuzz-seeds.sh`: connects in plaintext to the recording
//! relay on 127.0.0.1:$PGVALET_SEEDS_PORT and runs a few statements with the extended protocol,
//! so that its traffic becomes seeds for the fuzz targets.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("PGVALET_SEEDS_PORT")?;
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} dbname=fuzz user=fuzz password=fuzz-password sslmode=disable"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let statement = client.prepare("SELECT name FROM t WHERE id = $1").await?;
    for id in 1..4 {
        let _ = client.query(&statement, &[&id]).await?;
    }
    client.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    let _ = client.query_one("SELECT $1::text", &[&"text"]).await?;
    let _ = client.query("SELECT 1/0", &[]).await;
    Ok(())
}
