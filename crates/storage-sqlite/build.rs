// `sqlx::migrate!` embeds the migrations but cannot ask Cargo to watch their
// folder: without this, a new migration would not reach the build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
