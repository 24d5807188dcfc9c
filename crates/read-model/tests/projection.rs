//! The projection and the views on real Postgres, a fresh database per test.

use chrono::Utc;
use financing_domain::{
    Bid, CommandId, CommandOutcome, Event, EventEnvelope, EventMeta, InvestorEvent, InvestorId,
    InvoiceEvent, InvoiceId, InvoiceStatus, IssuerEvent, IssuerId, Money,
};
use financing_read_model::{
    CommandStatus, Cursor, InvestorView, InvoiceView, IssuerView, Page, Projected, ProjectionError,
    ReadModel, Recorded,
};
use sqlx::PgPool;
use uuid::Uuid;

/// Version `version` of `aggregate_id`'s stream, written under `command_id`.
fn at(
    version: u64,
    aggregate_id: impl Into<Uuid>,
    command_id: CommandId,
    event: Event,
) -> EventEnvelope {
    let aggregate_type = match event {
        Event::Issuer(_) => "Issuer",
        Event::Investor(_) => "Investor",
        Event::Invoice(_) => "Invoice",
    };
    EventEnvelope {
        meta: EventMeta {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            version,
            schema_version: 1,
            event_id: Uuid::new_v4(),
            command_id,
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            recorded_at: Utc::now(),
            actor: None,
        },
        event,
    }
}

/// An investor's stream: created, then 50 added, a bid of 20 placed, 5 released.
fn investor_history(id: InvestorId) -> Vec<EventEnvelope> {
    let c = CommandId::new_random;
    let invoice_id = InvoiceId::new_random();
    vec![
        at(
            1,
            id,
            c(),
            Event::Investor(InvestorEvent::InvestorCreated {
                investor_id: id,
                name: "Ada".into(),
            }),
        ),
        at(
            2,
            id,
            c(),
            Event::Investor(InvestorEvent::InvestorFundsAdded {
                investor_id: id,
                amount: Money::units(50),
            }),
        ),
        at(
            3,
            id,
            c(),
            Event::Investor(InvestorEvent::BidOnInvoicePlaced {
                investor_id: id,
                invoice_id,
                amount: Money::units(20),
            }),
        ),
        at(
            4,
            id,
            c(),
            Event::Investor(InvestorEvent::InvestorFundsReleased {
                investor_id: id,
                amount: Money::units(5),
            }),
        ),
    ]
}

fn account(id: InvestorId, balance: u64, reserved: u64, committed: u64) -> InvestorView {
    InvestorView {
        id,
        name: "Ada".into(),
        balance: Money::units(balance),
        reserved: Money::units(reserved),
        committed: Money::units(committed),
    }
}

async fn project_all(model: &ReadModel, messages: &[EventEnvelope]) {
    for message in messages {
        assert_eq!(
            model.project(message).await.unwrap(),
            Projected::Applied,
            "{message:?}"
        );
    }
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn an_investor_s_events_move_the_money_between_its_columns(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    project_all(&model, &investor_history(id)).await;
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 35, 15, 0))
    );
    assert_eq!(
        model.investors(Page::default()).await.unwrap().rows,
        [account(id, 35, 15, 0)]
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn a_duplicate_or_an_older_version_changes_nothing(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    project_all(&model, &history).await;

    for old in [&history[3], &history[1], &history[0]] {
        assert_eq!(model.project(old).await.unwrap(), Projected::Duplicate);
    }
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 35, 15, 0))
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn an_event_after_a_gap_waits_for_the_missing_one(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    project_all(&model, &history[..2]).await;

    assert_eq!(
        model.project(&history[3]).await.unwrap(),
        Projected::Gap { at: 2 }
    );
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 50, 0, 0))
    );
    // The relayer publishes the rest again, in order.
    project_all(&model, &history[2..]).await;
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 35, 15, 0))
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn a_batch_is_recorded_whole_or_not_at_all(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    let rejected = CommandOutcome {
        command_id: CommandId::new_random(),
        failed: false,
        aggregate_type: Some("Investor".into()),
        aggregate_id: Some(id.as_uuid()),
        reason: "insufficient balance".into(),
        decided_at: Utc::now(),
        actor: None,
    };

    // A batch with a gap (version 4 without 3) records nothing, not even what came before it
    let gapped = [
        Recorded::Event(&history[0]),
        Recorded::Event(&history[1]),
        Recorded::Outcome(&rejected),
        Recorded::Event(&history[3]),
    ];
    assert_eq!(model.record_all(&gapped).await.unwrap(), None);
    assert_eq!(model.investor(id).await.unwrap(), None);
    assert_eq!(
        model.command_status(rejected.command_id).await.unwrap(),
        CommandStatus::Pending
    );

    // A whole one is recorded, in order; a duplicate in it changes nothing
    let whole = [
        Recorded::Event(&history[0]),
        Recorded::Event(&history[1]),
        Recorded::Event(&history[0]),
        Recorded::Outcome(&rejected),
        Recorded::Event(&history[2]),
        Recorded::Event(&history[3]),
    ];
    let results = model.record_all(&whole).await.unwrap();
    use Projected::{Applied, Duplicate};
    let expected = [
        Some(Applied),
        Some(Applied),
        Some(Duplicate),
        None,
        Some(Applied),
    ];
    assert_eq!(results.as_deref().map(|r| &r[..5]), Some(&expected[..]));
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 35, 15, 0))
    );
    let reason = "insufficient balance".to_owned();
    assert_eq!(
        model.command_status(rejected.command_id).await.unwrap(),
        CommandStatus::Rejected { reason }
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn an_event_for_an_unknown_aggregate_is_a_gap(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    assert_eq!(
        model.project(&investor_history(id)[1]).await.unwrap(),
        Projected::Gap { at: 0 }
    );
    assert_eq!(model.investor(id).await.unwrap(), None);
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn an_event_that_would_make_money_negative_is_refused_and_changes_nothing(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    project_all(&model, &history[..2]).await;
    let overdraft = at(
        3,
        id,
        CommandId::new_random(),
        Event::Investor(InvestorEvent::InvestorFundsCommitted {
            investor_id: id,
            amount: Money::units(1),
        }),
    );
    let refused = model.project(&overdraft).await;
    assert!(
        matches!(refused, Err(ProjectionError::Contradiction(_))),
        "{refused:?}"
    );
    assert_eq!(
        model.investor(id).await.unwrap(),
        Some(account(id, 50, 0, 0))
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn an_invoice_shows_its_status_and_winning_bid(pool: PgPool) {
    let model = ReadModel::new(pool);
    let (issuer_id, invoice_id) = (IssuerId::new_random(), InvoiceId::new_random());
    let winning = Bid {
        investor_id: InvestorId::new_random(),
        amount: Money::units(20),
    };
    let c = CommandId::new_random;
    project_all(
        &model,
        &[
            at(
                1,
                issuer_id,
                c(),
                Event::Issuer(IssuerEvent::IssuerCreated {
                    issuer_id,
                    name: "ACME".into(),
                }),
            ),
            at(
                1,
                invoice_id,
                c(),
                Event::Invoice(InvoiceEvent::InvoiceCreated {
                    invoice_id,
                    issuer_id,
                    asking_price: Money::units(15),
                }),
            ),
        ],
    )
    .await;
    let view = |status, winning_bid| InvoiceView {
        id: invoice_id,
        issuer_id,
        asking_price: Money::units(15),
        status,
        winning_bid,
    };
    assert_eq!(
        model.invoice(invoice_id).await.unwrap(),
        Some(view(InvoiceStatus::Available, None))
    );

    project_all(
        &model,
        &[
            at(
                2,
                invoice_id,
                c(),
                Event::Invoice(InvoiceEvent::BidOnInvoiceRejected {
                    invoice_id,
                    bid: Bid {
                        amount: Money::units(1),
                        ..winning
                    },
                }),
            ),
            at(
                3,
                invoice_id,
                c(),
                Event::Invoice(InvoiceEvent::InvoiceFinanced {
                    invoice_id,
                    asking_price: Money::units(15),
                    bid: winning,
                }),
            ),
        ],
    )
    .await;
    assert_eq!(
        model.invoice(invoice_id).await.unwrap(),
        Some(view(InvoiceStatus::Financed, Some(winning)))
    );

    project_all(
        &model,
        &[at(
            4,
            invoice_id,
            c(),
            Event::Invoice(InvoiceEvent::InvoiceApproved {
                invoice_id,
                sold_price: Money::units(15),
                bid: winning,
            }),
        )],
    )
    .await;
    assert_eq!(
        model.invoices(Page::default()).await.unwrap().rows,
        [view(InvoiceStatus::Approved, Some(winning))]
    );
    assert_eq!(
        model.issuers(Page::default()).await.unwrap().rows,
        [IssuerView {
            id: issuer_id,
            name: "ACME".into()
        }]
    );
    assert_eq!(model.issuer(IssuerId::new_random()).await.unwrap(), None);
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn a_command_is_pending_until_its_event_or_its_rejection_arrives(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    let applied = history[0].meta.command_id;
    let rejected = CommandId::new_random();
    assert_eq!(
        model.command_status(applied).await.unwrap(),
        CommandStatus::Pending
    );

    project_all(&model, &history[..1]).await;
    let rejection = CommandOutcome {
        command_id: rejected,
        failed: false,
        aggregate_type: Some("Investor".into()),
        aggregate_id: Some(id.as_uuid()),
        reason: "insufficient balance".into(),
        decided_at: Utc::now(),
        actor: None,
    };
    model.record_outcome(&rejection).await.unwrap();
    model.record_outcome(&rejection).await.unwrap();

    assert_eq!(
        model.command_status(applied).await.unwrap(),
        CommandStatus::Applied
    );
    assert_eq!(
        model.command_status(rejected).await.unwrap(),
        CommandStatus::Rejected {
            reason: "insufficient balance".into()
        }
    );
    assert_eq!(
        model.command_status(CommandId::new_random()).await.unwrap(),
        CommandStatus::Pending
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn a_failed_command_shows_failed_until_it_is_sent_again_and_decided(pool: PgPool) {
    let model = ReadModel::new(pool);
    let id = InvestorId::new_random();
    let history = investor_history(id);
    let failure = |command_id| CommandOutcome {
        command_id,
        failed: true,
        aggregate_type: None,
        aggregate_id: None,
        reason: "cannot decode SellInvoice: missing field".into(),
        decided_at: Utc::now(),
        actor: None,
    };
    let applied_later = history[0].meta.command_id;
    model.record_outcome(&failure(applied_later)).await.unwrap();
    assert_eq!(
        model.command_status(applied_later).await.unwrap(),
        CommandStatus::Failed {
            reason: "cannot decode SellInvoice: missing field".into()
        }
    );
    project_all(&model, &history[..1]).await;
    assert_eq!(
        model.command_status(applied_later).await.unwrap(),
        CommandStatus::Applied,
        "applying replaces the failure"
    );
    model.record_outcome(&failure(applied_later)).await.unwrap();
    assert_eq!(
        model.command_status(applied_later).await.unwrap(),
        CommandStatus::Applied,
        "nothing replaces a decision"
    );

    let rejected_later = CommandId::new_random();
    model
        .record_outcome(&failure(rejected_later))
        .await
        .unwrap();
    let rejection = CommandOutcome {
        failed: false,
        reason: "insufficient balance".into(),
        ..failure(rejected_later)
    };
    model.record_outcome(&rejection).await.unwrap();
    assert_eq!(
        model.command_status(rejected_later).await.unwrap(),
        CommandStatus::Rejected {
            reason: "insufficient balance".into()
        }
    );
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn the_lists_go_page_by_page_in_creation_order_to_the_last_row(pool: PgPool) {
    let model = ReadModel::new(pool);
    let mut created = Vec::new();
    for n in 0..7 {
        let id = IssuerId::new_random();
        let mut event = at(
            1,
            id,
            CommandId::new_random(),
            Event::Issuer(IssuerEvent::IssuerCreated {
                issuer_id: id,
                name: format!("issuer {n}"),
            }),
        );
        // Two share a creation time: the order of arrival breaks the tie.
        event.meta.recorded_at =
            chrono::DateTime::from_timestamp(1_700_000_000 + n / 2, 0).unwrap();
        project_all(&model, &[event]).await;
        created.push(id);
    }
    let all = model.issuers(Page::default()).await.unwrap();
    assert_eq!(all.next, None, "a list asked whole has no next page");
    let ids = |rows: &[IssuerView]| rows.iter().map(|view| view.id).collect::<Vec<_>>();
    assert_eq!(ids(&all.rows), created);

    let mut paged = Vec::new();
    let mut page = Page {
        size: Some(3),
        after: None,
    };
    let mut pages = 0;
    loop {
        let listed = model.issuers(page).await.unwrap();
        assert!(listed.rows.len() <= 3);
        paged.extend(ids(&listed.rows));
        pages += 1;
        let Some(next) = listed.next else { break };
        let token = next.token();
        page.after = Some(Cursor::from_token(&token).expect("a token reads back"));
    }
    assert_eq!(paged, created);
    assert_eq!(pages, 3, "7 rows are 3 pages of 3");
    assert_eq!(Cursor::from_token("not a token"), None);
}

#[sqlx::test(migrator = "financing_read_model::MIGRATOR")]
async fn a_stuck_view_is_cleared_once_it_moves_past_its_gap_and_only_its_own(pool: PgPool) {
    // Given an issuer and an investor that share an id, both stuck before their first version
    let model = ReadModel::new(pool);
    let id = Uuid::new_v4();
    for aggregate_type in ["Issuer", "Investor"] {
        model
            .record_stuck(aggregate_type, id, 0, 2, "version 1 is lost")
            .await
            .unwrap();
    }
    assert_eq!(model.stuck_views().await.unwrap().len(), 2);
    assert!(
        model.clear_repaired().await.unwrap().is_empty(),
        "neither moved"
    );

    // When the investor's view moves
    project_all(&model, &investor_history(InvestorId::from(id))[..1]).await;

    // Then its own row is cleared, and only that one
    let cleared = model.clear_repaired().await.unwrap();
    let kinds = |views: &[financing_read_model::StuckView]| -> Vec<(String, Uuid)> {
        views
            .iter()
            .map(|view| (view.aggregate_type.clone(), view.aggregate_id))
            .collect()
    };
    assert_eq!(kinds(&cleared), [("Investor".to_string(), id)]);
    let left = model.stuck_views().await.unwrap();
    assert_eq!(kinds(&left), [("Issuer".to_string(), id)]);
}
