//! The command line: global options, commands and their arguments (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use shop_domain::auth::Role;

/// The HS256 secret the app uses when none is configured (documented in README.md).
pub const DEV_AUTH_SECRET: &str = "dev-auth-secret-change-me";

/// The largest `--value`, in whole units (the API's limit).
const MAX_VALUE_UNITS: u64 = shop_domain::validation::MAX_COMPAT_VALUE_UNITS.unsigned_abs();

/// The order statuses `--status` accepts, in lifecycle order.
pub const STATUSES: [&str; 6] = [
    "placed",
    "confirmed",
    "shipped",
    "delivered",
    "rejected",
    "cancelled",
];

/// What `shopctl --help` shows after the options.
const LONG_ABOUT: &str = "\
Drives the shop's public HTTP API (see openapi.yaml): products, accounts, orders, live
order tracking and dead letters. Output is aligned tables for people; --json prints the
API's JSON for scripts.

Without --token, shopctl mints a development token for --as with --role, signed with
--auth-secret, and warns on stderr while that is the documented development secret.

Exit codes:
  0  ok
  1  any other failure, e.g. the output could not be written
  2  usage error (bad arguments)
  3  the API refused the request (4xx other than 404: 401, 403, 409, 422, 429, ...);
     the problem detail is on stderr. `order create --count` exits 3 when any order
     was refused
  4  not found (404); `order deliver-earliest` exits 4 when no order is confirmed or
     shipped
  5  server error (5xx), an unreadable answer, or the API is unreachable
  6  `order watch` ended with the order rejected or cancelled";

/// `shopctl`: the shop's API from the command line.
#[derive(Debug, Parser)]
#[command(name = "shopctl", version, about = "Command-line client of the shop's HTTP API", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts (before or after the command).
#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the gateway (plain http).
    #[arg(long, global = true, env = "SHOP_URL", default_value = "http://127.0.0.1:3000", value_parser = parse_url)]
    pub url: Url,
    /// Bearer token to send; without it (or when empty) a development token is minted.
    #[arg(long, global = true, env = "SHOP_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<String>,
    /// Subject of the minted development token (used without --token).
    #[arg(
        long = "as",
        global = true,
        value_name = "EMAIL",
        default_value = "admin@shop.test"
    )]
    pub as_email: String,
    /// Role of the minted token (also the role `shopctl token` mints).
    #[arg(long, global = true, value_enum, default_value_t = RoleArg::Admin)]
    pub role: RoleArg,
    /// HS256 secret that signs minted tokens.
    #[arg(long, global = true, env = "SHOP_AUTH_SECRET", hide_env_values = true, default_value = DEV_AUTH_SECRET)]
    pub auth_secret: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A token role as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Places and cancels their own orders.
    Customer,
    /// Manages products and accounts, ships and delivers orders.
    Staff,
    /// Staff, plus dead letters.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Customer => Role::Customer,
            RoleArg::Staff => Role::Staff,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a development token for EMAIL (role from --role, signed with --auth-secret).
    Token {
        /// Subject of the token: a customer's email or a staff id.
        email: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..))]
        ttl: u32,
    },
    /// Products in the catalogue.
    #[command(subcommand)]
    Product(ProductCommand),
    /// Customers' credit.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Orders: place, list, show, follow live, ship, deliver, cancel.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Messages that could not be delivered or applied (admin).
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
}

/// `shopctl product …`
#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Create or replace a product (staff); --stock sets the units free to sell.
    Put {
        /// The product's SKU (letters, digits, `.`, `_`, `-`).
        sku: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Unit price in cents.
        #[arg(long, allow_negative_numbers = true)]
        price_cents: i64,
        /// Units free to sell.
        #[arg(long, allow_negative_numbers = true)]
        stock: i64,
    },
    /// List every product (all pages).
    List,
}

/// `shopctl account …`
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add credit to a customer's account (staff).
    Credit {
        /// The customer's email.
        email: String,
        /// Amount to add, in cents.
        #[arg(long, allow_negative_numbers = true)]
        amount_cents: i64,
    },
    /// Show a customer's credit.
    Show {
        /// The customer's email.
        email: String,
    },
}

/// `shopctl order …`
#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Place one order, or --count orders through the batch API.
    Create(CreateOrder),
    /// List orders, oldest first (all pages).
    List {
        /// Only this customer's orders.
        #[arg(long, value_name = "EMAIL")]
        customer: Option<String>,
        /// Only orders in this status.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(STATUSES))]
        status: Option<String>,
    },
    /// Show one order with its lines and history.
    Show {
        /// The order id.
        id: String,
    },
    /// Follow an order live, one line per status change, until it is delivered, rejected
    /// or cancelled (exit 6 for rejected or cancelled).
    Watch {
        /// The order id.
        id: String,
    },
    /// Mark an order shipped (staff).
    Ship {
        /// The order id.
        id: String,
    },
    /// Mark an order delivered (staff).
    Deliver {
        /// The order id.
        id: String,
    },
    /// Cancel an order before it ships.
    Cancel {
        /// The order id.
        id: String,
    },
    /// Deliver the earliest undelivered order: the oldest one shipped or confirmed (a
    /// confirmed one is shipped first).
    DeliverEarliest,
}

/// `shopctl order create`
#[derive(Debug, Args)]
pub struct CreateOrder {
    /// The customer the order is for.
    #[arg(long, value_name = "EMAIL")]
    pub customer: String,
    /// Order value in whole units (the coding-challenge seed form, POST /api/v1/order).
    #[arg(long, value_name = "UNITS", required_unless_present = "item", conflicts_with = "item",
          value_parser = clap::value_parser!(u64).range(1..=MAX_VALUE_UNITS))]
    pub value: Option<u64>,
    /// An order line; repeat for more lines.
    #[arg(long, value_name = "SKU:QTY", value_parser = parse_item)]
    pub item: Vec<Item>,
    /// How many such orders to place (more than one goes through the batch API, 100 at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Idempotency key of a single order (not with --count): the same key and order give
    /// back the same order.
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub idempotency_key: Option<String>,
}

/// One `--item SKU:QTY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The product's SKU.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// `shopctl dead-letters …`
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List every service's dead letters.
    List,
    /// Deliver a dead letter again with fresh attempts.
    Retry {
        /// The dead letter's id, `<service>:<id>`.
        id: String,
    },
}

/// Parses `--url`: an absolute `http://` URL.
fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" if url.has_host() => Ok(url),
        "http" => Err("the URL has no host".into()),
        "https" => Err("https is not supported by this build; reach the gateway over plain http (e.g. through a TLS-terminating proxy or a tunnel)".into()),
        other => Err(format!("unsupported scheme {other}; use http://")),
    }
}

/// Parses `--token`: visible ASCII, surrounding whitespace ignored; empty stands for none.
fn parse_token(raw: &str) -> Result<String, String> {
    let token = raw.trim();
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is visible ASCII".into());
    }
    Ok(token.to_owned())
}

/// Parses `--idempotency-key`: 1 to 255 visible ASCII characters, as the API requires.
fn parse_idempotency_key(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an idempotency key is 1 to 255 visible ASCII characters".into());
    }
    Ok(raw.to_owned())
}

/// Parses `--item SKU:QTY`.
fn parse_item(raw: &str) -> Result<Item, String> {
    let Some((sku, quantity)) = raw.rsplit_once(':') else {
        return Err("expected SKU:QTY, e.g. WIDGET-1:2".into());
    };
    if sku.is_empty() {
        return Err("the SKU is empty".into());
    }
    let quantity = quantity
        .parse()
        .map_err(|_| format!("the quantity {quantity:?} is not a whole number"))?;
    Ok(Item {
        sku: sku.to_owned(),
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn items() {
        assert_eq!(
            parse_item("WIDGET-1:2"),
            Ok(Item {
                sku: "WIDGET-1".into(),
                quantity: 2
            })
        );
        for bad in ["WIDGET-1", ":2", "W:", "W:-1", "W:x", "W:99999999999"] {
            assert!(parse_item(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:3000").is_ok());
        assert!(parse_url("http://shop.internal/prefix/").is_ok());
        for bad in [
            "https://shop.example",
            "ftp://x",
            "127.0.0.1:3000",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn value_and_items_exclude_each_other() {
        let parse =
            |args: &[&str]| Cli::try_parse_from([&["shopctl", "order", "create"], args].concat());
        assert!(parse(&["--customer", "a@b.c", "--value", "150"]).is_ok());
        assert!(parse(&["--customer", "a@b.c", "--item", "A:1", "--item", "B:2"]).is_ok());
        assert!(parse(&["--customer", "a@b.c"]).is_err());
        assert!(parse(&["--customer", "a@b.c", "--value", "1", "--item", "A:1"]).is_err());
        assert!(parse(&["--customer", "a@b.c", "--value", "1", "--count", "0"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "shopctl", "account", "show", "a@b.c", "--json", "--role", "staff",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.role, RoleArg::Staff);
        let cli = Cli::try_parse_from([
            "shopctl",
            "account",
            "credit",
            "a@b.c",
            "--amount-cents",
            "-5",
        ])
        .expect("negative amounts reach the API");
        assert!(matches!(
            cli.command,
            Command::Account(AccountCommand::Credit {
                amount_cents: -5,
                ..
            })
        ));
    }
}
