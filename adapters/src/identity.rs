//! The identity store: organizations, users and memberships, refresh tokens,
//! partner API keys, gate devices, signing keys and the audit log, for
//! SQLite and PostgreSQL (schema `bc_identity`) with one macro body like
//! `sql.rs`.
//!
//! Every change that takes an `AuditEntry` writes it in the same
//! transaction. SQLite transactions here start with a write, so a
//! transaction never has to upgrade a read snapshot to a write lock (which
//! fails at once, without waiting, when another connection wrote since).

use crate::db_error::db_error;
use sqlx::Row;

use usher_actors::{
    ApiKeyRecord, AuditEntry, AuditRecord, BoxFuture, DeviceRecord, IdentityStore, MemberRecord, OrgRecord, RefreshRecord, RefreshUse,
    SigningKeyRecord, StoreError, UserRecord,
};
use usher_engine::{ApiKeyId, DeviceId, EventId, Membership, Millis, OrgId, PartnerId, Role, Scope, UserId};

use crate::sql::{PgStore, SqliteStore};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A failed write: a missing referenced row is `NotFound`, a duplicate is
/// `Conflict`, anything else the database's failure.
fn written(what: &str, e: sqlx::Error) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_foreign_key_violation() => StoreError::NotFound(format!("{what}: a row it refers to does not exist")),
        Some(d) if d.is_unique_violation() => StoreError::Conflict(format!("{what}: already exists")),
        _ => db_error(e),
    }
}

/// Emails are compared lower-cased; the table stores them that way.
fn email_key(email: &str) -> String {
    email.to_lowercase()
}

fn join_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn split_scopes(s: &str) -> Result<Vec<Scope>, StoreError> {
    s.split(',').filter(|x| !x.is_empty()).map(|x| Scope::parse(x).map_err(|e| corrupt(format!("stored scope: {e}")))).collect()
}

fn join_events(events: &[EventId]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",")
}

fn split_events(s: &str) -> Result<Vec<EventId>, StoreError> {
    s.split(',').filter(|x| !x.is_empty()).map(|x| EventId::parse(x).map_err(|e| corrupt(format!("stored event id: {e}")))).collect()
}

fn parse_id<T>(s: &str, f: impl Fn(&str) -> Result<T, usher_engine::InvalidInput>) -> Result<T, StoreError> {
    f(s).map_err(|e| corrupt(format!("stored id {s:?}: {e}")))
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).map_err(|e| corrupt(format!("stored role: {e}")))
}

fn parse_family(s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(s).map_err(|e| corrupt(format!("stored refresh family {s:?}: {e}")))
}

const USER_COLUMNS: &str = "id, email, name, password_hash, admin, created_at";
const API_KEY_COLUMNS: &str = "k.id, k.partner_id, p.name, k.org_id, k.prefix, k.hash, k.scopes, k.events, k.expires_at, k.created_at, \
                               k.last_used_at, k.revoked_at";
const DEVICE_COLUMNS: &str = "id, org_id, gate, prefix, hash, events, created_at, last_used_at, revoked_at";
const AUDIT_COLUMNS: &str = "seq, org_id, at, actor, address, action, target, detail";

/// Reads one stored row of a driver's `DB` into a record.
type FromRow<DB, T> = fn(&<DB as sqlx::Database>::Row) -> Result<T, StoreError>;

macro_rules! identity_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// One column of a stored row; a value of the wrong type is corrupt data.
            fn col<'r, T>(r: &'r <$db as sqlx::Database>::Row, i: usize) -> Result<T, StoreError>
            where
                T: sqlx::Decode<'r, $db> + sqlx::Type<$db>,
            {
                r.try_get(i).map_err(|e| corrupt(format!("stored row, column {i}: {e}")))
            }

            fn org_from_row(r: &<$db as sqlx::Database>::Row) -> Result<OrgRecord, StoreError> {
                Ok(OrgRecord {
                    id: parse_id(Self::col(r, 0)?, OrgId::parse)?,
                    name: Self::col(r, 1)?,
                    created_at: Millis(Self::col(r, 2)?),
                })
            }

            fn user_from_row(r: &<$db as sqlx::Database>::Row) -> Result<UserRecord, StoreError> {
                Ok(UserRecord {
                    id: parse_id(Self::col(r, 0)?, UserId::parse)?,
                    email: Self::col(r, 1)?,
                    name: Self::col(r, 2)?,
                    password_hash: Self::col(r, 3)?,
                    admin: Self::col(r, 4)?,
                    created_at: Millis(Self::col(r, 5)?),
                })
            }

            fn api_key_from_row(r: &<$db as sqlx::Database>::Row) -> Result<ApiKeyRecord, StoreError> {
                Ok(ApiKeyRecord {
                    id: parse_id(Self::col(r, 0)?, ApiKeyId::parse)?,
                    partner_id: parse_id(Self::col(r, 1)?, PartnerId::parse)?,
                    partner_name: Self::col(r, 2)?,
                    org: parse_id(Self::col(r, 3)?, OrgId::parse)?,
                    prefix: Self::col(r, 4)?,
                    hash: Self::col(r, 5)?,
                    scopes: split_scopes(Self::col(r, 6)?)?,
                    events: split_events(Self::col(r, 7)?)?,
                    expires_at: Self::col::<Option<i64>>(r, 8)?.map(Millis),
                    created_at: Millis(Self::col(r, 9)?),
                    last_used_at: Self::col::<Option<i64>>(r, 10)?.map(Millis),
                    revoked_at: Self::col::<Option<i64>>(r, 11)?.map(Millis),
                })
            }

            fn device_from_row(r: &<$db as sqlx::Database>::Row) -> Result<DeviceRecord, StoreError> {
                Ok(DeviceRecord {
                    id: parse_id(Self::col(r, 0)?, DeviceId::parse)?,
                    org: parse_id(Self::col(r, 1)?, OrgId::parse)?,
                    gate: Self::col(r, 2)?,
                    prefix: Self::col(r, 3)?,
                    hash: Self::col(r, 4)?,
                    events: split_events(Self::col(r, 5)?)?,
                    created_at: Millis(Self::col(r, 6)?),
                    last_used_at: Self::col::<Option<i64>>(r, 7)?.map(Millis),
                    revoked_at: Self::col::<Option<i64>>(r, 8)?.map(Millis),
                })
            }

            fn audit_from_row(r: &<$db as sqlx::Database>::Row) -> Result<AuditRecord, StoreError> {
                Ok(AuditRecord {
                    seq: Self::col(r, 0)?,
                    entry: AuditEntry {
                        org: parse_id(Self::col(r, 1)?, OrgId::parse)?,
                        at: Millis(Self::col(r, 2)?),
                        actor: Self::col(r, 3)?,
                        address: Self::col(r, 4)?,
                        action: Self::col(r, 5)?,
                        target: Self::col(r, 6)?,
                        detail: Self::col(r, 7)?,
                    },
                })
            }

            /// The one row `sql` finds by the text key `$1`, if any.
            async fn fetch_by<T>(&self, sql: &str, key: &str, from_row: FromRow<$db, T>) -> Result<Option<T>, StoreError> {
                let row = sqlx::query(sql).bind(key).fetch_optional(self.pool()).await.map_err(db_error)?;
                row.as_ref().map(from_row).transpose()
            }

            /// Every row `sql` finds by the text key `$1`, in its order.
            async fn fetch_all_by<T>(&self, sql: &str, key: &str, from_row: FromRow<$db, T>) -> Result<Vec<T>, StoreError> {
                let rows = sqlx::query(sql).bind(key).fetch_all(self.pool()).await.map_err(db_error)?;
                rows.iter().map(from_row).collect()
            }

            /// Ends a change: its audit entry joins the same transaction, then both commit.
            async fn commit_audited(mut tx: sqlx::Transaction<'static, $db>, audit: &AuditEntry) -> Result<(), StoreError> {
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await.map_err(db_error)
            }

            /// The last write of a change (`q`, an INSERT or upsert; a failure
            /// is refused as `written` says of `what`), then the audit entry in
            /// the same transaction, then the commit.
            async fn write_audited<'q>(
                mut tx: sqlx::Transaction<'static, $db>,
                q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                what: &str,
                audit: &AuditEntry,
            ) -> Result<(), StoreError> {
                q.execute(&mut *tx).await.map_err(|e| written(what, e))?;
                Self::commit_audited(tx, audit).await
            }

            /// A change that may find nothing to change (`q` is one UPDATE or
            /// DELETE): with no row affected nothing is written and the answer
            /// is `false`; otherwise the audit entry joins the same
            /// transaction, both commit, and the answer is `true`.
            async fn change_audited<'q>(
                &self,
                q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                audit: &AuditEntry,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                if q.execute(&mut *tx).await.map_err(db_error)?.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::commit_audited(tx, audit).await?;
                Ok(true)
            }

            // -- organizations and members

            async fn do_create_org(&self, org: &OrgRecord, audit: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                let inserted = sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                    .bind(org.id.to_string())
                    .bind(&org.name)
                    .bind(org.created_at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!("organization {} exists", org.id)));
                }
                Self::commit_audited(tx, audit).await
            }

            async fn do_get_org(&self, id: OrgId) -> Result<Option<OrgRecord>, StoreError> {
                self.fetch_by("SELECT id, name, created_at FROM organizations WHERE id = $1", &id.to_string(), Self::org_from_row).await
            }

            async fn do_list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
                let rows =
                    sqlx::query("SELECT id, name, created_at FROM organizations ORDER BY name, id").fetch_all(self.pool()).await.map_err(db_error)?;
                rows.iter().map(Self::org_from_row).collect()
            }

            async fn do_set_member(&self, org: OrgId, user: UserId, role: Role, audit: &AuditEntry) -> Result<(), StoreError> {
                let tx = self.pool().begin().await.map_err(db_error)?;
                // A role change keeps the date the member was added.
                let q = sqlx::query(
                    "INSERT INTO memberships (org_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(org.to_string())
                .bind(user.to_string())
                .bind(role.as_str())
                .bind(audit.at.0);
                Self::write_audited(tx, q, &format!("member {user} of {org}"), audit).await
            }

            async fn do_remove_member(&self, org: OrgId, user: UserId, audit: &AuditEntry) -> Result<bool, StoreError> {
                let q = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2").bind(org.to_string()).bind(user.to_string());
                self.change_audited(q, audit).await
            }

            async fn do_members(&self, org: OrgId) -> Result<Vec<MemberRecord>, StoreError> {
                let sql = "SELECT m.org_id, m.user_id, u.email, m.role, m.added_at FROM memberships m JOIN users u ON u.id = m.user_id \
                           WHERE m.org_id = $1 ORDER BY u.email";
                self.fetch_all_by(sql, &org.to_string(), |r| {
                    Ok(MemberRecord {
                        org: parse_id(Self::col(r, 0)?, OrgId::parse)?,
                        user: parse_id(Self::col(r, 1)?, UserId::parse)?,
                        email: Self::col(r, 2)?,
                        role: parse_role(Self::col(r, 3)?)?,
                        added_at: Millis(Self::col(r, 4)?),
                    })
                })
                .await
            }

            async fn do_memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
                self.fetch_all_by("SELECT org_id, role FROM memberships WHERE user_id = $1 ORDER BY org_id", &user.to_string(), |r| {
                    Ok(Membership { org: parse_id(Self::col(r, 0)?, OrgId::parse)?, role: parse_role(Self::col(r, 1)?)? })
                })
                .await
            }

            // -- users

            async fn do_create_user(&self, u: &UserRecord) -> Result<bool, StoreError> {
                let inserted = sqlx::query(
                    "INSERT INTO users (id, email, name, password_hash, admin, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (email) DO NOTHING",
                )
                .bind(u.id.to_string())
                .bind(email_key(&u.email))
                .bind(&u.name)
                .bind(&u.password_hash)
                .bind(u.admin)
                .bind(u.created_at.0)
                .execute(self.pool())
                .await
                .map_err(|e| written(&format!("user {}", u.id), e))?
                .rows_affected();
                Ok(inserted == 1)
            }

            async fn do_user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
                self.fetch_by(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"), &email_key(email), Self::user_from_row).await
            }

            async fn do_get_user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
                self.fetch_by(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &id.to_string(), Self::user_from_row).await
            }

            // -- refresh tokens

            async fn do_insert_refresh(&self, t: &RefreshRecord) -> Result<(), StoreError> {
                // A token issued into a family that was revoked meanwhile (a
                // reuse detected while this one was being issued) is born
                // revoked.
                sqlx::query(
                    "INSERT INTO refresh_tokens (hash, family, user_id, issued_at, expires_at, spent_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, NULL, (SELECT MIN(revoked_at) FROM refresh_tokens WHERE family = $2))",
                )
                .bind(&t.hash)
                .bind(t.family.to_string())
                .bind(t.user.to_string())
                .bind(t.issued_at.0)
                .bind(t.expires_at.0)
                .execute(self.pool())
                .await
                .map_err(|e| written("refresh token", e))?;
                Ok(())
            }

            /// One conditional UPDATE spends the token: of two concurrent
            /// uses exactly one matches the row. A token is live while it is
            /// unspent, unexpired and no token of its family is revoked.
            async fn do_use_refresh(&self, hash: &str, now: Millis) -> Result<RefreshUse, StoreError> {
                let spent = sqlx::query(
                    "UPDATE refresh_tokens SET spent_at = $1 \
                     WHERE hash = $2 AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
                       AND NOT EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.family = refresh_tokens.family AND f.revoked_at IS NOT NULL) \
                     RETURNING family, user_id, issued_at, expires_at",
                )
                .bind(now.0)
                .bind(hash)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error)?;
                if let Some(r) = spent {
                    return Ok(RefreshUse::Fresh(RefreshRecord {
                        hash: hash.to_owned(),
                        family: parse_family(Self::col(&r, 0)?)?,
                        user: parse_id(Self::col(&r, 1)?, UserId::parse)?,
                        issued_at: Millis(Self::col(&r, 2)?),
                        expires_at: Millis(Self::col(&r, 3)?),
                    }));
                }
                let row = sqlx::query(
                    "SELECT family, user_id, spent_at, revoked_at, \
                       EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.family = t.family AND f.revoked_at IS NOT NULL) \
                     FROM refresh_tokens t WHERE hash = $1",
                )
                .bind(hash)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error)?;
                let Some(r) = row else { return Ok(RefreshUse::Invalid) };
                let family: String = Self::col(&r, 0)?;
                let user = parse_id(Self::col(&r, 1)?, UserId::parse)?;
                let spent_at: Option<i64> = Self::col(&r, 2)?;
                let revoked_at: Option<i64> = Self::col(&r, 3)?;
                let family_revoked: bool = Self::col(&r, 4)?;
                if spent_at.is_none() && revoked_at.is_none() && !family_revoked {
                    // Merely expired.
                    return Ok(RefreshUse::Invalid);
                }
                // Presented again after it was spent (or after its family was
                // revoked): someone holds a copy. Revoke the whole family.
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
                    .bind(now.0)
                    .bind(&family)
                    .execute(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(RefreshUse::Reused { family: parse_family(&family)?, user })
            }

            async fn do_revoke_refresh(&self, hash: &str, now: Millis) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT family FROM refresh_tokens WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                let Some(r) = row else { return Ok(false) };
                let family: String = Self::col(&r, 0)?;
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
                    .bind(now.0)
                    .bind(&family)
                    .execute(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(true)
            }

            // -- partner API keys

            async fn do_create_api_key(&self, k: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                // Write first (see the module doc), then check whose partner it is.
                sqlx::query("INSERT INTO partners (id, org_id, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
                    .bind(k.partner_id.to_string())
                    .bind(k.org.to_string())
                    .bind(&k.partner_name)
                    .bind(k.created_at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| written(&format!("partner {}", k.partner_id), e))?;
                let owner: String = sqlx::query("SELECT org_id FROM partners WHERE id = $1")
                    .bind(k.partner_id.to_string())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .try_get(0)
                    .map_err(corrupt)?;
                if owner != k.org.to_string() {
                    return Err(StoreError::Conflict(format!("partner {} belongs to another organization", k.partner_id)));
                }
                let q = sqlx::query(
                    "INSERT INTO api_keys (id, partner_id, org_id, prefix, hash, scopes, events, expires_at, created_at, last_used_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(k.id.to_string())
                .bind(k.partner_id.to_string())
                .bind(k.org.to_string())
                .bind(&k.prefix)
                .bind(&k.hash)
                .bind(join_scopes(&k.scopes))
                .bind(join_events(&k.events))
                .bind(k.expires_at.map(|t| t.0))
                .bind(k.created_at.0)
                .bind(k.last_used_at.map(|t| t.0))
                .bind(k.revoked_at.map(|t| t.0));
                Self::write_audited(tx, q, &format!("api key {}", k.prefix), audit).await
            }

            async fn do_api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
                let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN partners p ON p.id = k.partner_id WHERE k.prefix = $1");
                self.fetch_by(&sql, prefix, Self::api_key_from_row).await
            }

            async fn do_api_keys(&self, org: OrgId) -> Result<Vec<ApiKeyRecord>, StoreError> {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN partners p ON p.id = k.partner_id WHERE k.org_id = $1 ORDER BY k.created_at, k.id"
                );
                self.fetch_all_by(&sql, &org.to_string(), Self::api_key_from_row).await
            }

            async fn do_partner_name(&self, org: OrgId, partner: PartnerId) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT name FROM partners WHERE id = $1 AND org_id = $2")
                    .bind(partner.to_string())
                    .bind(org.to_string())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(|r| Self::col(r, 0)).transpose()
            }

            /// Revokes a live key or device of `org` (`table` is a constant).
            async fn revoke_credential(&self, table: &str, org: OrgId, id: String, audit: &AuditEntry) -> Result<bool, StoreError> {
                let sql = format!("UPDATE {table} SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL");
                self.change_audited(sqlx::query(&sql).bind(audit.at.0).bind(id).bind(org.to_string()), audit).await
            }

            /// Records a use of a key or device (`table` is a constant); never moves back.
            async fn touch_credential(&self, table: &str, id: String, now: Millis) -> Result<(), StoreError> {
                sqlx::query(&format!("UPDATE {table} SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)"))
                    .bind(now.0)
                    .bind(id)
                    .execute(self.pool())
                    .await
                    .map_err(db_error)?;
                Ok(())
            }

            // -- gate devices

            async fn do_create_device(&self, d: &DeviceRecord, audit: &AuditEntry) -> Result<(), StoreError> {
                let tx = self.pool().begin().await.map_err(db_error)?;
                let q = sqlx::query(
                    "INSERT INTO gate_devices (id, org_id, gate, prefix, hash, events, created_at, last_used_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(d.id.to_string())
                .bind(d.org.to_string())
                .bind(&d.gate)
                .bind(&d.prefix)
                .bind(&d.hash)
                .bind(join_events(&d.events))
                .bind(d.created_at.0)
                .bind(d.last_used_at.map(|t| t.0))
                .bind(d.revoked_at.map(|t| t.0));
                Self::write_audited(tx, q, &format!("device {}", d.prefix), audit).await
            }

            async fn do_device_by_prefix(&self, prefix: &str) -> Result<Option<DeviceRecord>, StoreError> {
                self.fetch_by(&format!("SELECT {DEVICE_COLUMNS} FROM gate_devices WHERE prefix = $1"), prefix, Self::device_from_row).await
            }

            async fn do_devices(&self, org: OrgId) -> Result<Vec<DeviceRecord>, StoreError> {
                let sql = format!("SELECT {DEVICE_COLUMNS} FROM gate_devices WHERE org_id = $1 ORDER BY created_at, id");
                self.fetch_all_by(&sql, &org.to_string(), Self::device_from_row).await
            }

            // -- signing keys

            async fn do_signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
                let rows = sqlx::query("SELECT kid, seed, created_at, retired_at FROM signing_keys ORDER BY created_at, kid")
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter()
                    .map(|r| {
                        Ok(SigningKeyRecord {
                            kid: Self::col(r, 0)?,
                            seed: Self::col(r, 1)?,
                            created_at: Millis(Self::col(r, 2)?),
                            retired_at: Self::col::<Option<i64>>(r, 3)?.map(Millis),
                        })
                    })
                    .collect()
            }

            async fn do_add_signing_key(&self, k: &SigningKeyRecord) -> Result<(), StoreError> {
                let mut tx = self.pool().begin().await.map_err(db_error)?;
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2")
                    .bind(k.created_at.0)
                    .bind(&k.kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                sqlx::query("INSERT INTO signing_keys (kid, seed, created_at, retired_at) VALUES ($1, $2, $3, $4)")
                    .bind(&k.kid)
                    .bind(&k.seed)
                    .bind(k.created_at.0)
                    .bind(k.retired_at.map(|t| t.0))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| written(&format!("signing key {}", k.kid), e))?;
                tx.commit().await.map_err(db_error)
            }

            // -- audit log

            async fn do_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
                Self::commit_audited(self.pool().begin().await.map_err(db_error)?, entry).await
            }

            async fn do_audit_log(&self, org: OrgId, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"))
                    .bind(org.to_string())
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error)?;
                rows.iter().map(Self::audit_from_row).collect()
            }
        }

        impl IdentityStore for $store {
            fn create_org<'a>(&'a self, org: &'a OrgRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_create_org(org, audit))
            }
            fn get_org(&self, id: OrgId) -> BoxFuture<'_, Result<Option<OrgRecord>, StoreError>> {
                Box::pin(self.do_get_org(id))
            }
            fn list_orgs(&self) -> BoxFuture<'_, Result<Vec<OrgRecord>, StoreError>> {
                Box::pin(self.do_list_orgs())
            }
            fn set_member<'a>(&'a self, org: OrgId, user: UserId, role: Role, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_set_member(org, user, role, audit))
            }
            fn remove_member<'a>(&'a self, org: OrgId, user: UserId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.do_remove_member(org, user, audit))
            }
            fn members(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>> {
                Box::pin(self.do_members(org))
            }
            fn memberships(&self, user: UserId) -> BoxFuture<'_, Result<Vec<Membership>, StoreError>> {
                Box::pin(self.do_memberships(user))
            }
            fn create_user<'a>(&'a self, user: &'a UserRecord) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.do_create_user(user))
            }
            fn user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>, StoreError>> {
                Box::pin(self.do_user_by_email(email))
            }
            fn get_user(&self, id: UserId) -> BoxFuture<'_, Result<Option<UserRecord>, StoreError>> {
                Box::pin(self.do_get_user(id))
            }
            fn insert_refresh<'a>(&'a self, r: &'a RefreshRecord) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_insert_refresh(r))
            }
            fn use_refresh<'a>(&'a self, hash: &'a str, now: Millis) -> BoxFuture<'a, Result<RefreshUse, StoreError>> {
                Box::pin(self.do_use_refresh(hash, now))
            }
            fn revoke_refresh<'a>(&'a self, hash: &'a str, now: Millis) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.do_revoke_refresh(hash, now))
            }
            fn create_api_key<'a>(&'a self, key: &'a ApiKeyRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_create_api_key(key, audit))
            }
            fn api_key_by_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<ApiKeyRecord>, StoreError>> {
                Box::pin(self.do_api_key_by_prefix(prefix))
            }
            fn api_keys(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreError>> {
                Box::pin(self.do_api_keys(org))
            }
            fn partner_name(&self, org: OrgId, partner: PartnerId) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
                Box::pin(self.do_partner_name(org, partner))
            }
            fn revoke_api_key<'a>(&'a self, org: OrgId, id: ApiKeyId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.revoke_credential("api_keys", org, id.to_string(), audit))
            }
            fn touch_api_key(&self, id: ApiKeyId, now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
                Box::pin(self.touch_credential("api_keys", id.to_string(), now))
            }
            fn create_device<'a>(&'a self, d: &'a DeviceRecord, audit: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_create_device(d, audit))
            }
            fn device_by_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<DeviceRecord>, StoreError>> {
                Box::pin(self.do_device_by_prefix(prefix))
            }
            fn devices(&self, org: OrgId) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StoreError>> {
                Box::pin(self.do_devices(org))
            }
            fn revoke_device<'a>(&'a self, org: OrgId, id: DeviceId, audit: &'a AuditEntry) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.revoke_credential("gate_devices", org, id.to_string(), audit))
            }
            fn touch_device(&self, id: DeviceId, now: Millis) -> BoxFuture<'_, Result<(), StoreError>> {
                Box::pin(self.touch_credential("gate_devices", id.to_string(), now))
            }
            fn signing_keys(&self) -> BoxFuture<'_, Result<Vec<SigningKeyRecord>, StoreError>> {
                Box::pin(self.do_signing_keys())
            }
            fn add_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_add_signing_key(key))
            }
            fn audit<'a>(&'a self, entry: &'a AuditEntry) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.do_audit(entry))
            }
            fn audit_log(&self, org: OrgId, before: Option<i64>, limit: u32) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
                Box::pin(self.do_audit_log(org, before, limit))
            }
        }
    };
}

identity_store!(SqliteStore, sqlx::Sqlite);
identity_store!(PgStore, sqlx::Postgres);
