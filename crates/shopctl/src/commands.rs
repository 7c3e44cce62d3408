//! Tokens, products, accounts and dead letters.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use shop_domain::auth::{Claims, Role, mint_token};

use crate::api::Api;
use crate::cli::{AccountCommand, DEV_AUTH_SECRET, DeadLetterCommand, ProductCommand};
use crate::output::{Out, cents, note, text};
use crate::table::{Align, Table};

/// A development token for `subject` with `role`, valid for `ttl_secs`, signed with `secret`;
/// warns on stderr when `secret` is the documented development secret.
pub fn dev_token(subject: &str, role: Role, ttl_secs: u32, secret: &str) -> String {
    if secret == DEV_AUTH_SECRET {
        note(
            "shopctl: warning: signing the token with the development secret (set SHOP_AUTH_SECRET or --auth-secret for a real deployment)",
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let exp = i64::try_from(now)
        .unwrap_or(i64::MAX)
        .saturating_add(i64::from(ttl_secs));
    mint_token(
        &Claims {
            sub: subject.to_owned(),
            role,
            exp,
        },
        secret.as_bytes(),
    )
}

/// `shopctl product …`
pub fn product(api: &Api, out: &mut Out, command: &ProductCommand) -> anyhow::Result<()> {
    match command {
        ProductCommand::Put {
            sku,
            name,
            price_cents,
            stock,
        } => {
            let body = json!({"name": name, "price_cents": price_cents, "stock": stock});
            let reply = api.send(Method::PUT, &["products", sku], &[], Some(&body), None)?;
            if out.json() {
                out.document(&reply.body)?;
            } else {
                let verb = if reply.status == 201 {
                    "created"
                } else {
                    "replaced"
                };
                out.line(&format!("{verb} product {}", text(&reply.body["sku"])))?;
                out.table(&products_table(std::slice::from_ref(&reply.body)))?;
            }
        }
        ProductCommand::List => {
            let items = api.get_all(&["products"], &[])?;
            if out.json() {
                out.document(&json!({"items": items, "next_cursor": null}))?;
            } else {
                out.table(&products_table(&items))?;
            }
        }
    }
    Ok(())
}

/// Products as a table.
fn products_table(products: &[Value]) -> Table {
    let mut table = Table::new(&[
        ("SKU", Align::Left),
        ("NAME", Align::Left),
        ("PRICE", Align::Right),
        ("STOCK", Align::Right),
        ("RESERVED", Align::Right),
    ]);
    for product in products {
        table.row([
            text(&product["sku"]),
            text(&product["name"]),
            cents(&product["price_cents"]),
            text(&product["stock"]),
            text(&product["reserved"]),
        ]);
    }
    table
}

/// `shopctl account …`
pub fn account(api: &Api, out: &mut Out, command: &AccountCommand) -> anyhow::Result<()> {
    let account = match command {
        AccountCommand::Credit {
            email,
            amount_cents,
        } => api.post(
            &["accounts", email, "credit"],
            Some(&json!({"amount_cents": amount_cents})),
        )?,
        AccountCommand::Show { email } => api.get(&["accounts", email], &[])?,
    };
    if out.json() {
        out.document(&account)?;
    } else {
        let mut table = Table::new(&[
            ("CUSTOMER", Align::Left),
            ("BALANCE", Align::Right),
            ("HELD", Align::Right),
        ]);
        table.row([
            text(&account["customer"]),
            cents(&account["balance_cents"]),
            cents(&account["held_cents"]),
        ]);
        out.table(&table)?;
    }
    Ok(())
}

/// `shopctl dead-letters …`
pub fn dead_letters(api: &Api, out: &mut Out, command: &DeadLetterCommand) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List => {
            let answer = api.get(&["admin", "dead-letters"], &[])?;
            if out.json() {
                out.document(&answer)?;
                return Ok(());
            }
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("EVENT", Align::Left),
                ("DESTINATION", Align::Left),
                ("ATTEMPTS", Align::Right),
                ("DEAD AT", Align::Left),
                ("REASON", Align::Left),
            ]);
            for letter in answer["items"].as_array().into_iter().flatten() {
                table.row([
                    text(&letter["id"]),
                    text(&letter["event_type"]),
                    text(&letter["destination"]),
                    text(&letter["attempts"]),
                    text(&letter["dead_at"]),
                    text(&letter["reason"]),
                ]);
            }
            out.table(&table)?;
        }
        DeadLetterCommand::Retry { id } => {
            let answer = api.post(&["admin", "dead-letters", id, "retry"], None)?;
            if out.json() {
                if !answer.is_null() {
                    out.document(&answer)?;
                }
            } else {
                out.line(&format!("dead letter {id} queued for delivery"))?;
            }
        }
    }
    Ok(())
}
