//! `sqlx::migrate!` embeds the migrations at compile time: rebuild when one is
//! added or changed, or the binary would silently run stale migrations.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=../migrations/sqlite");
    println!("cargo:rerun-if-changed=../migrations/postgres");
}
