//! What every stream consumer keeps beside its effect, in the same
//! transaction: the ids of the messages it applied (`consumed_messages`), and
//! its position, the next embedded-stream offset (`stream_cursors`) or the
//! next offset of each Kafka topic partition (`consumer_offsets`).

use std::collections::HashMap;

use usher_actors::{KafkaPosition, StoreError, StreamMessage};
use usher_engine::Millis;

use crate::db_error::db_error;
use crate::sql::{PgStore, SqliteStore};

/// The next Kafka offset of each (topic, partition) among `msgs`.
fn next_offsets(msgs: &[StreamMessage]) -> HashMap<(&str, i32), i64> {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in msgs {
        if let (Some(p), Some(o)) = (m.partition, m.offset) {
            let e = next.entry((m.topic.as_str(), p)).or_insert(o + 1);
            *e = (*e).max(o + 1);
        }
    }
    next
}

macro_rules! consume {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Records that `consumer` applies `message_id`; `false` when it
            /// already had (then it must change nothing).
            pub(crate) async fn first_time(
                tx: &mut sqlx::Transaction<'static, $db>,
                consumer: &str,
                message_id: &str,
                now: Millis,
            ) -> Result<bool, StoreError> {
                let n = sqlx::query(
                    "INSERT INTO consumed_messages (consumer, message_id, consumed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer, message_id) DO NOTHING",
                )
                .bind(consumer)
                .bind(message_id)
                .bind(now.0)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected();
                Ok(n == 1)
            }

            /// Moves `consumer`'s position past `msgs`: its embedded cursor,
            /// or its offsets for those read from Kafka. Never backwards.
            pub(crate) async fn advance(tx: &mut sqlx::Transaction<'static, $db>, consumer: &str, msgs: &[StreamMessage]) -> Result<(), StoreError> {
                for ((topic, partition), n) in next_offsets(msgs) {
                    sqlx::query(
                        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset \
                         WHERE consumer_offsets.next_offset < excluded.next_offset",
                    )
                    .bind(consumer)
                    .bind(topic)
                    .bind(partition)
                    .bind(n)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
                if let Some(last) = msgs.iter().filter(|m| m.partition.is_none()).filter_map(|m| m.offset).max() {
                    sqlx::query(
                        "INSERT INTO stream_cursors (name, position) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE stream_cursors.position < excluded.position",
                    )
                    .bind(consumer)
                    .bind(last + 1)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                }
                Ok(())
            }

            /// `consumer`'s next Kafka offsets.
            pub(crate) async fn kafka_positions(&self, consumer: &str) -> Result<Vec<KafkaPosition>, StoreError> {
                let rows = sqlx::query_as::<_, (String, i32, i64)>("SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1")
                    .bind(consumer)
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(rows.into_iter().map(|(topic, partition, next_offset)| KafkaPosition { topic, partition, next_offset }).collect())
            }

            /// `consumer`'s embedded cursor, if it has one.
            pub(crate) async fn cursor_of(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
                let row: Option<(i64,)> = sqlx::query_as("SELECT position FROM stream_cursors WHERE name = $1")
                    .bind(consumer)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|r| r.0))
            }
        }
    };
}

consume!(SqliteStore, sqlx::Sqlite);
consume!(PgStore, sqlx::Postgres);
