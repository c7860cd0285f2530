//! Small per-platform state that must survive restarts (Telegram's polling
//! offset; a Discord session and sequence later), kept in `state.db` by
//! platform and key.

use rusqlite::OptionalExtension;

use crate::db::{Db, StoreError};

/// The stored value of `key` for `platform`, if any.
pub async fn load(db: &Db, platform: &str, key: &str) -> Result<Option<String>, StoreError> {
    let (platform, key) = (platform.to_string(), key.to_string());
    db.call(move |c| {
        Ok(c.query_row(
            "SELECT value FROM platform_state WHERE platform = ?1 AND key = ?2",
            [&platform, &key],
            |r| r.get(0),
        )
        .optional()?)
    })
    .await
}

/// Stores `value` under `key` for `platform`. Queued at once (before the
/// call returns), so writes land in the order they were made.
pub fn save(
    db: &Db,
    platform: &str,
    key: &str,
    value: String,
) -> impl Future<Output = Result<(), StoreError>> + use<> {
    let (platform, key) = (platform.to_string(), key.to_string());
    db.call(move |c| {
        c.execute(
            "INSERT INTO platform_state (platform, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(platform, key) DO UPDATE SET value = ?3",
            [&platform, &key, &value],
        )?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_are_kept_per_platform_and_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&db, "a", "offset").await.ok().flatten(), None);
        drop(save(&db, "a", "offset", "5".into()));
        save(&db, "a", "offset", "6".into())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = save(&db, "b", "offset", "9".into()).await;
        assert_eq!(
            load(&db, "a", "offset").await.ok().flatten().as_deref(),
            Some("6")
        );
        assert_eq!(
            load(&db, "b", "offset").await.ok().flatten().as_deref(),
            Some("9")
        );
    }
}
