//! An idle server's memory: started, asked once whether it is alive, left
//! to settle; the harness reads its RSS when the scenario ends.

use super::Ctx;
use crate::{Result, Row};

pub(super) async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    ctx.connect().await?.get("/healthz").await?;
    tokio::time::sleep(ctx.opts.idle_settle).await;
    let mut row = Row::new("idle", "after start");
    if ctx.pid.is_none() {
        row.note = "RSS unknown: the server was not started by the harness".into();
    }
    Ok(vec![row])
}
