//! `shopctl order …`: place, list, show, follow live, ship, deliver, cancel.

use std::io::{IsTerminal, Read};
use std::thread;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{Api, Failure, describe_problem};
use crate::cli::{CreateOrder, OrderCommand};
use crate::output::{Out, cents, note, text};
use crate::sse;
use crate::table::{Align, Table};

/// The most orders one batch call places (the API's limit).
const BATCH_SIZE: usize = 100;
/// Consecutive failed reconnections after which `order watch` gives up.
const MAX_RECONNECTS: u32 = 5;
/// Statuses after which an order never changes again.
const TERMINAL: [&str; 3] = ["delivered", "rejected", "cancelled"];

/// Runs one `shopctl order …` command.
pub fn run(api: &Api, out: &mut Out, command: &OrderCommand) -> anyhow::Result<()> {
    match command {
        OrderCommand::Create(create) if create.count > 1 => batch(api, out, create),
        OrderCommand::Create(create) => place(api, out, create),
        OrderCommand::List { customer, status } => {
            let mut query = Vec::new();
            if let Some(customer) = customer {
                query.push(("customer", customer.as_str()));
            }
            if let Some(status) = status {
                query.push(("status", status.as_str()));
            }
            let orders = api.get_all(&["orders"], &query)?;
            if out.json() {
                out.document(&json!({"items": orders, "next_cursor": null}))?;
            } else {
                out.table(&orders_table(&orders))?;
            }
            Ok(())
        }
        OrderCommand::Show { id } => {
            let order = api.get(&["orders", id], &[])?;
            show(out, &order)
        }
        OrderCommand::Watch { id } => watch(api, out, id),
        OrderCommand::Ship { id } => act(api, out, id, "ship"),
        OrderCommand::Deliver { id } => act(api, out, id, "deliver"),
        OrderCommand::Cancel { id } => act(api, out, id, "cancel"),
        OrderCommand::DeliverEarliest => deliver_earliest(api, out),
    }
}

/// The JSON body of one order as `create` describes it (items, or value in cents).
fn place_body(create: &CreateOrder) -> Value {
    if let Some(units) = create.value {
        // clap bounds --value, so the product fits; saturating all the same.
        let cents = i64::try_from(units).unwrap_or(i64::MAX).saturating_mul(100);
        return json!({"customer": create.customer, "value_cents": cents});
    }
    let items: Vec<Value> = create
        .item
        .iter()
        .map(|item| json!({"sku": item.sku, "quantity": item.quantity}))
        .collect();
    json!({"customer": create.customer, "items": items})
}

/// Places one order: `--value` through the seed route `POST /api/v1/order?email=&value=`,
/// `--item` through `POST /api/v1/orders`.
fn place(api: &Api, out: &mut Out, create: &CreateOrder) -> anyhow::Result<()> {
    let key = create.idempotency_key.as_deref();
    let reply = match create.value {
        Some(units) => {
            let units = units.to_string();
            let query = [
                ("email", create.customer.as_str()),
                ("value", units.as_str()),
            ];
            api.send(Method::POST, &["order"], &query, None, key)?
        }
        None => api.send(
            Method::POST,
            &["orders"],
            &[],
            Some(&place_body(create)),
            key,
        )?,
    };
    if reply.replayed {
        note("shopctl: the idempotency key was used before: this is the order it placed");
    }
    show(out, &reply.body)
}

/// Places `--count` orders through `POST /api/v1/orders/batch`, 100 per call.
fn batch(api: &Api, out: &mut Out, create: &CreateOrder) -> anyhow::Result<()> {
    let body = place_body(create);
    let total = usize::try_from(create.count).unwrap_or(usize::MAX);
    let progress = progress_bar(total);
    let mut results: Vec<Value> = Vec::with_capacity(total);
    let mut failure = None;
    while results.len() < total {
        let size = BATCH_SIZE.min(total - results.len());
        let chunk = json!({"orders": vec![body.clone(); size]});
        match api.post(&["orders", "batch"], Some(&chunk)) {
            Ok(answer) => match answer["results"].as_array() {
                Some(list) if list.len() == size => results.extend(list.iter().cloned()),
                _ => {
                    failure = Some(Failure::Server {
                        message: format!("the batch answer does not hold {size} results"),
                    });
                    break;
                }
            },
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        progress.set_position(u64::try_from(results.len()).unwrap_or(u64::MAX));
    }
    progress.finish_and_clear();

    let refused: Vec<(usize, &Value)> = results
        .iter()
        .enumerate()
        .filter(|(_, result)| result["status"].as_u64() != Some(202))
        .collect();
    let accepted = results.len() - refused.len();
    let summary = format!(
        "accepted {accepted}, refused {} of {total} orders",
        refused.len()
    );
    if out.json() {
        out.document(&json!({"results": results}))?;
        note(&summary);
    } else {
        out.line(&summary)?;
        if !refused.is_empty() {
            let mut table = Table::new(&[
                ("#", Align::Right),
                ("STATUS", Align::Right),
                ("PROBLEM", Align::Left),
            ]);
            for (index, result) in &refused {
                table.row([
                    (index + 1).to_string(),
                    text(&result["status"]),
                    describe_problem(&result["problem"]).unwrap_or_default(),
                ]);
            }
            out.table(&table)?;
        }
    }
    if let Some(failure) = failure {
        return Err(failure.into());
    }
    if let Some((_, first)) = refused.first() {
        return Err(Failure::Refused {
            status: u16::try_from(first["status"].as_u64().unwrap_or(0)).unwrap_or(0),
            message: format!("{} of {total} orders refused", refused.len()),
        }
        .into());
    }
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(total: usize) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(u64::try_from(total).unwrap_or(u64::MAX)), target);
    if let Ok(style) = ProgressStyle::with_template("placing orders {bar:40} {pos}/{len} {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

/// Orders as a table.
fn orders_table(orders: &[Value]) -> Table {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("CUSTOMER", Align::Left),
        ("STATUS", Align::Left),
        ("TOTAL", Align::Right),
        ("CREATED", Align::Left),
        ("REASON", Align::Left),
    ]);
    for order in orders {
        table.row([
            text(&order["id"]),
            text(&order["customer"]),
            text(&order["status"]),
            cents(&order["total_cents"]),
            text(&order["created_at"]),
            text(&order["reason"]),
        ]);
    }
    table
}

/// Prints one order: its fields, lines and history (or its JSON).
fn show(out: &mut Out, order: &Value) -> anyhow::Result<()> {
    if out.json() {
        out.document(order)?;
        return Ok(());
    }
    let mut fields = Table::fields();
    fields.row(["id".to_owned(), text(&order["id"])]);
    fields.row(["customer".to_owned(), text(&order["customer"])]);
    fields.row(["status".to_owned(), text(&order["status"])]);
    if !order["reason"].is_null() {
        fields.row(["reason".to_owned(), text(&order["reason"])]);
    }
    fields.row(["total".to_owned(), cents(&order["total_cents"])]);
    fields.row(["created".to_owned(), text(&order["created_at"])]);
    let voucher = &order["voucher"];
    if !voucher.is_null() {
        fields.row([
            "voucher".to_owned(),
            format!(
                "{} ({})",
                text(&voucher["code"]),
                cents(&voucher["value_cents"])
            ),
        ]);
    }
    out.table(&fields)?;

    let items = order["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !items.is_empty() {
        let mut table = Table::new(&[
            ("SKU", Align::Left),
            ("QTY", Align::Right),
            ("PRICE", Align::Right),
        ]);
        for item in items {
            table.row([
                text(&item["sku"]),
                text(&item["quantity"]),
                cents(&item["price_cents"]),
            ]);
        }
        out.line("")?;
        out.table(&table)?;
    }
    let history = order["history"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !history.is_empty() {
        let mut table = Table::new(&[("STATUS", Align::Left), ("AT", Align::Left)]);
        for change in history {
            table.row([text(&change["status"]), text(&change["at"])]);
        }
        out.line("")?;
        out.table(&table)?;
    }
    Ok(())
}

/// Ships, delivers or cancels order `id`.
fn act(api: &Api, out: &mut Out, id: &str, action: &str) -> anyhow::Result<()> {
    let order = api.post(&["orders", id, action], None)?;
    if out.json() {
        out.document(&order)?;
    } else {
        out.line(&format!(
            "order {} is {}",
            text(&order["id"]),
            text(&order["status"])
        ))?;
    }
    Ok(())
}

/// Delivers the oldest order that is shipped or confirmed, shipping it first if need be.
fn deliver_earliest(api: &Api, out: &mut Out) -> anyhow::Result<()> {
    let mut oldest: Option<Value> = None;
    for status in ["shipped", "confirmed"] {
        let page = api.get(&["orders"], &[("status", status), ("limit", "1")])?;
        let Some(first) = page["items"].as_array().and_then(|items| items.first()) else {
            continue;
        };
        let key = |order: &Value| (text(&order["created_at"]), text(&order["id"]));
        if oldest
            .as_ref()
            .is_none_or(|current| key(first) < key(current))
        {
            oldest = Some(first.clone());
        }
    }
    let Some(order) = oldest else {
        return Err(Failure::NotFound {
            message: "no order is confirmed or shipped".into(),
        }
        .into());
    };
    let id = text(&order["id"]);
    let shipped_first = order["status"] == "confirmed";
    if shipped_first {
        api.post(&["orders", &id, "ship"], None)?;
    }
    let delivered = api.post(&["orders", &id, "deliver"], None)?;
    if out.json() {
        out.document(&delivered)?;
    } else {
        let how = if shipped_first {
            "shipped and delivered"
        } else {
            "delivered"
        };
        out.line(&format!(
            "{how} order {id} ({}, created {})",
            text(&delivered["customer"]),
            text(&delivered["created_at"])
        ))?;
    }
    Ok(())
}

/// Follows order `id` live: every status change from its first, one line each, until a
/// terminal status; reconnects with `Last-Event-ID` when the stream drops before that.
fn watch(api: &Api, out: &mut Out, id: &str) -> anyhow::Result<()> {
    let segments = ["orders", id, "events"];
    let mut last_id = 0;
    let mut failures = 0;
    loop {
        let response = match api.open_stream(&segments, last_id) {
            Ok(response) => response,
            Err(Failure::Server { message }) if failures < MAX_RECONNECTS => {
                failures += 1;
                note(&format!("shopctl: {message}; reconnecting"));
                thread::sleep(Duration::from_millis(250 << failures));
                continue;
            }
            Err(failure) => return Err(failure.into()),
        };
        failures = 0;
        if let Some(order) = follow(response, out, &mut last_id)? {
            return match text(&order["status"]).as_str() {
                "delivered" => Ok(()),
                status => Err(Failure::OrderEnded {
                    id: id.to_owned(),
                    status: status.to_owned(),
                    reason: order["reason"].as_str().map(str::to_owned),
                }
                .into()),
            };
        }
        // The stream ended early (time limit, proxy, network): resume after the last event.
        thread::sleep(Duration::from_millis(250));
    }
}

/// Reads one connection's events, printing each status change and advancing `last_id`;
/// the order once it reached a terminal status, or `None` when the stream ended before.
fn follow(
    mut response: reqwest::blocking::Response,
    out: &mut Out,
    last_id: &mut i64,
) -> anyhow::Result<Option<Value>> {
    let mut parser = sse::Parser::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match response.read(&mut buffer) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(read) => read,
        };
        for event in parser.push(&buffer[..read]) {
            if event.name != "status" {
                continue;
            }
            let order: Value = serde_json::from_str(&event.data).map_err(|e| Failure::Server {
                message: format!("unreadable event: {e}"),
            })?;
            if let Some(id) = event.id.as_deref().and_then(|id| id.trim().parse().ok()) {
                *last_id = id;
            }
            if out.json() {
                out.json_line(&order)?;
            } else {
                out.line(&status_line(&order))?;
            }
            if TERMINAL.contains(&text(&order["status"]).as_str()) {
                return Ok(Some(order));
            }
        }
    }
}

/// One line of `order watch`: when, which order, its status, and the reason if any.
fn status_line(order: &Value) -> String {
    let at = order["history"]
        .as_array()
        .and_then(|history| history.last())
        .map(|change| text(&change["at"]))
        .unwrap_or_default();
    let mut line = format!("{at}  {}  {}", text(&order["id"]), text(&order["status"]));
    if let Some(reason) = order["reason"].as_str() {
        line.push_str("  ");
        line.push_str(reason);
    }
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Item;

    fn create(value: Option<u64>, item: Vec<Item>) -> CreateOrder {
        CreateOrder {
            customer: "ada@example.com".into(),
            value,
            item,
            count: 1,
            idempotency_key: None,
        }
    }

    #[test]
    fn order_bodies() {
        assert_eq!(
            place_body(&create(Some(150), Vec::new())),
            json!({"customer": "ada@example.com", "value_cents": 15000})
        );
        let items = vec![Item {
            sku: "A".into(),
            quantity: 2,
        }];
        assert_eq!(
            place_body(&create(None, items)),
            json!({"customer": "ada@example.com", "items": [{"sku": "A", "quantity": 2}]})
        );
    }

    #[test]
    fn status_lines() {
        let order = json!({
            "id": "ord_1", "status": "rejected", "reason": "out_of_stock: A\n",
            "history": [{"status": "placed", "at": "t1"}, {"status": "rejected", "at": "t2"}]
        });
        assert_eq!(status_line(&order), "t2  ord_1  rejected  out_of_stock: A ");
        assert_eq!(status_line(&json!({})), "    ");
    }
}
