//! `usher`: the server (`usher serve`) and a small client.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use usher_gateway::{Application, Config, client};
use usher_proto::v1::HoldBestAvailableRequest;

#[derive(Parser)]
#[command(name = "usher", version, about = "Usher: an actor-system ticketing engine")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Addr {
    /// Server address.
    #[arg(long, env = "USHER_ADDR", default_value = "127.0.0.1:50051", global = true)]
    addr: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server. With no configuration: embedded SQLite in ./usher-data and demo data.
    Serve(ServeArgs),
    /// List events.
    Events {
        #[command(flatten)]
        a: Addr,
    },
    /// Show an event's seat map.
    Seats {
        event: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Hold seats, e.g. `usher hold EVENT SC-A-12 SC-A-13`.
    Hold {
        event: String,
        #[arg(required = true)]
        seats: Vec<String>,
        #[arg(long, default_value = "cli-user")]
        customer: String,
        /// Idempotency key; a fresh one by default. Repeat it to retry safely.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// Hold the best available seats.
    Best {
        event: String,
        quantity: u32,
        #[arg(long, default_value = "")]
        section: String,
        #[arg(long, default_value = "")]
        category: String,
        #[arg(long, default_value = "cli-user")]
        customer: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// Show a hold.
    ShowHold {
        hold: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Release a hold.
    Release {
        hold: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// Order the seats of one or more holds (prices come from the event).
    Order {
        #[arg(required = true)]
        holds: Vec<String>,
        /// Where the tickets are sent.
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "cli-user")]
        customer: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// Show an order.
    ShowOrder {
        order: String,
        #[command(flatten)]
        a: Addr,
    },
    /// Cancel an unpaid order (its seats become available).
    CancelOrder {
        order: String,
        #[arg(long, default_value = "cli-user")]
        customer: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// Pay an order with a card number (see the README's test cards) and wait for the tickets.
    Pay {
        order: String,
        card: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
    /// List an order's tickets and their codes; `--pdf FILE` downloads the PDF.
    Tickets {
        order: String,
        #[arg(long)]
        pdf: Option<PathBuf>,
        #[command(flatten)]
        a: Addr,
    },
    /// Scan a ticket code at a gate.
    Scan {
        event: String,
        code: String,
        #[arg(long, default_value = "gate-1")]
        gate: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        a: Addr,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (also USHER_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of the embedded default (also USHER_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL (also USHER_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// gRPC listen address (also USHER_GRPC_ADDR); port 0 picks one.
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address for the storefront and JSON API (also USHER_HTTP_ADDR).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// Load the demo venue and events (default: on for the embedded default).
    #[arg(long, conflicts_with = "no_demo_data")]
    demo_data: bool,
    #[arg(long)]
    no_demo_data: bool,
    /// Send email to this SMTP server, e.g. smtp://127.0.0.1:2525 (also
    /// USHER_SMTP_URL). Default: deliver into DATA_DIR/mail (a maildir).
    #[arg(long)]
    smtp_url: Option<String>,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut c = Config::load(a.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(v) = a.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = a.database_url {
        c.database_url = v;
    }
    if let Some(v) = a.grpc_addr {
        c.grpc_addr = v;
    }
    if let Some(v) = a.http_addr {
        c.http_addr = v;
    }
    if a.demo_data {
        c.demo_data = Some(true);
    }
    if a.no_demo_data {
        c.demo_data = Some(false);
    }
    if let Some(v) = a.smtp_url {
        c.smtp_url = v;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&c.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let app = Application::build(&c).await?;
    let store = if c.is_embedded() {
        format!("embedded SQLite at {}", c.store_url().trim_start_matches("sqlite://"))
    } else {
        "PostgreSQL".to_owned()
    };
    println!("usher: store: {store}{}", if c.demo_data() { " (demo data loaded)" } else { "" });
    println!("usher: grpc listening on http://{} (reflection v1 and v1alpha, grpc.health.v1)", app.grpc_addr());
    println!("usher: storefront on http://{}/ (JSON API under /api)", app.http_addr());
    let mail = if c.smtp_url.is_empty() { format!("maildir {}", c.mail_dir().join("new").display()) } else { "SMTP".to_owned() };
    println!("usher: email to {mail}; ticket PDFs in {}", c.pdf_dir().display());
    let ctx = app.ctx.clone();
    app.run(shutdown_signal()).await?;
    println!("usher: group commit: {}", ctx.registry.stats().summary());
    println!("usher: saga writes: {}", ctx.sagas.deps.writer.summary());
    println!("usher: stopped cleanly");
    Ok(())
}

#[tokio::main]
async fn main() {
    // `usher seats EVENT | head`: Rust ignores SIGPIPE, so println! panics
    // once the reader has gone. Without unsafe code to restore the signal,
    // end quietly the way a program killed by SIGPIPE does (status 141).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    // A user sees the error chain, not a backtrace.
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("usher: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Events { a } => client::events(client::connect(&a.addr).await?).await,
        Cmd::Seats { event, a } => client::seats(client::connect(&a.addr).await?, event).await,
        Cmd::Hold { event, seats, customer, key, a } => {
            client::hold(client::connect(&a.addr).await?, event, seats, customer, key.unwrap_or_else(client::new_key)).await
        }
        Cmd::Best { event, quantity, section, category, customer, key, a } => {
            let r = HoldBestAvailableRequest {
                idempotency_key: key.unwrap_or_else(client::new_key),
                event_id: event,
                customer_id: customer,
                quantity,
                section,
                category,
            };
            client::best(client::connect(&a.addr).await?, r).await
        }
        Cmd::ShowHold { hold, a } => client::show_hold(client::connect(&a.addr).await?, hold).await,
        Cmd::Release { hold, key, a } => client::release(client::connect(&a.addr).await?, hold, key.unwrap_or_else(client::new_key)).await,
        Cmd::Order { holds, email, customer, key, a } => {
            client::order(client::connect(&a.addr).await?, holds, customer, email, key.unwrap_or_else(client::new_key)).await
        }
        Cmd::ShowOrder { order, a } => client::show_order(client::connect(&a.addr).await?, order).await,
        Cmd::CancelOrder { order, customer, key, a } => {
            client::cancel_order(client::connect(&a.addr).await?, order, customer, key.unwrap_or_else(client::new_key)).await
        }
        Cmd::Pay { order, card, key, a } => {
            client::pay(client::connect(&a.addr).await?, order, card, key.unwrap_or_else(client::new_key)).await
        }
        Cmd::Tickets { order, pdf, a } => client::tickets(client::connect(&a.addr).await?, order, pdf).await,
        Cmd::Scan { event, code, gate, key, a } => {
            client::scan(client::connect(&a.addr).await?, event, code, gate, key.unwrap_or_else(client::new_key)).await
        }
    }
}
