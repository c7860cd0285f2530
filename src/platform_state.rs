//! Small per-platform state that must survive restarts (Telegram's polling
//! offset, a Discord session and sequence), kept by platform and key behind
//! the storage interface ([`Store`]), on either backend.

use rusqlite::OptionalExtension;

use crate::db::StoreError;
use crate::store::Store;

const LOAD_SQL: &str = "SELECT value FROM platform_state WHERE platform = $1 AND key = $2";
const SAVE_SQL: &str = "INSERT INTO platform_state (platform, key, value) VALUES ($1, $2, $3)
     ON CONFLICT (platform, key) DO UPDATE SET value = excluded.value";

/// The stored value of `key` for `platform`, if any.
pub async fn load(store: &Store, platform: &str, key: &str) -> Result<Option<String>, StoreError> {
    let (platform, key) = (platform.to_string(), key.to_string());
    match store {
        Store::Sqlite(db) => {
            db.call(move |c| {
                Ok(c.query_row(LOAD_SQL, [&platform, &key], |r| r.get(0))
                    .optional()?)
            })
            .await
        }
        // Ordered: a load sees every save queued before it.
        Store::Postgres(pg) => {
            pg.call_ordered(move |c| async move {
                let row = c.query_opt(LOAD_SQL, &[&platform, &key]).await?;
                Ok(row.map(|r| r.get(0)))
            })
            .await
        }
    }
}

/// Stores `value` under `key` for `platform`. Queued at once (before the
/// call returns), so writes land in the order they were made, on either
/// backend, whether or not the returned future is awaited.
pub fn save(
    store: &Store,
    platform: &str,
    key: &str,
    value: String,
) -> impl Future<Output = Result<(), StoreError>> + use<> {
    let (platform, key) = (platform.to_string(), key.to_string());
    let queued: futures_util::future::BoxFuture<'static, Result<(), StoreError>> = match store {
        Store::Sqlite(db) => Box::pin(db.call(move |c| {
            c.execute(SAVE_SQL, [&platform, &key, &value])?;
            Ok(())
        })),
        Store::Postgres(pg) => Box::pin(pg.call_ordered(move |c| async move {
            c.execute(SAVE_SQL, &[&platform, &key, &value]).await?;
            Ok(())
        })),
    };
    queued
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends;

    #[tokio::test]
    async fn values_are_kept_per_platform_and_key_in_the_order_written() {
        for b in test_backends::all().await {
            let s = &b.store;
            assert_eq!(load(s, "a", "offset").await.ok().flatten(), None);
            // Writes that are never awaited still land, in order.
            for i in 0..20 {
                drop(save(s, "a", "offset", i.to_string()));
            }
            save(s, "a", "offset", "20".into())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = save(s, "b", "offset", "9".into()).await;
            assert_eq!(
                load(s, "a", "offset").await.ok().flatten().as_deref(),
                Some("20"),
                "{}",
                s.backend()
            );
            assert_eq!(
                load(s, "b", "offset").await.ok().flatten().as_deref(),
                Some("9")
            );
        }
    }
}
