//! The send decision of design.md §2, as pure functions over plain values.
//!
//! Deciding happens in two steps because the second needs facts that cost
//! something to get: [`address`] looks only at the two recipient fields
//! (rows 1–4 and 7), then, for a person, the caller looks up a known phone and
//! the message kind only when they can matter, and [`decide`] finishes the
//! table (rows 5, 6 and 8–11).

use std::fmt;

use super::identifier::IdClass;
use super::payload::Target;

/// The switches of `[policy]` that shape a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Row 8: add the known phone to a BSUID-only send.
    pub prefer_phone: bool,
    /// Row 2: refuse usernames locally instead of letting Meta fail them.
    pub block_usernames: bool,
    /// Row 9: authentication templates need a phone.
    pub auth_templates_require_phone: bool,
    /// Row 10: campaign sends need a phone.
    pub campaign_requires_phone: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            prefer_phone: true,
            block_usernames: true,
            auth_templates_require_phone: true,
            campaign_requires_phone: true,
        }
    }
}

/// Which of the two recipient fields a value was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    To,
    Recipient,
}

impl Field {
    /// The rewrite target that keeps this field's original value.
    fn keep(self) -> Target {
        match self {
            Field::To => Target::FromTo,
            Field::Recipient => Target::FromRecipient,
        }
    }
}

/// One recipient field's value and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    pub value: &'a str,
    pub class: IdClass,
}

/// The recipient facts of a send. A field holding `null` is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts<'a> {
    /// `recipient_type: "group"`.
    pub group: bool,
    pub to: Option<Recipient<'a>>,
    pub recipient: Option<Recipient<'a>>,
}

/// A usable identifier and the field it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'a> {
    pub value: &'a str,
    pub field: Field,
}

/// Who a person-addressed send is for, once the fields agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'a> {
    pub phone: Option<Located<'a>>,
    pub bsuid: Option<Located<'a>>,
}

impl Person<'_> {
    /// A BSUID and no phone: the case where the store and the message kind matter.
    pub fn is_bsuid_only(&self) -> bool {
        self.phone.is_none() && self.bsuid.is_some()
    }
}

/// The result of looking at the recipient fields alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing<'a> {
    /// Forward the body as it is (row 1, or a policy that is switched off).
    Untouched,
    Blocked(BlockReason),
    Person(Person<'a>),
}

/// What kind of message a send carries, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageKind {
    /// An authentication template (one-tap, zero-tap, copy-code).
    pub authentication: bool,
    /// A Marketing Messages API send with `bid_spec`.
    pub bid_spec: bool,
    /// A campaign send: `/marketing_messages`, a MARKETING template, or a campaign client.
    pub campaign: bool,
}

/// Why a send is refused locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// Row 2. `recased_bsuid` when the value would be a BSUID in upper case.
    UsernameTarget { recased_bsuid: bool },
    /// Row 3.
    InvalidRecipient,
    /// Row 4.
    MissingRecipient,
    /// Row 7.
    ConflictingRecipients,
    /// Row 9.
    AuthTemplateNeedsPhone,
    /// Row 9, for the other message Meta refuses to a BSUID (cloud-api.md §2).
    BidSpecNeedsPhone,
    /// Row 10.
    CampaignNeedsPhone,
}

impl BlockReason {
    /// The machine-readable reason, used in headers, logs and `error_data.details`.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::UsernameTarget { .. } => "username_target",
            BlockReason::InvalidRecipient => "invalid_recipient",
            BlockReason::MissingRecipient => "missing_recipient",
            BlockReason::ConflictingRecipients => "conflicting_recipients",
            BlockReason::AuthTemplateNeedsPhone => "auth_template_needs_phone",
            BlockReason::BidSpecNeedsPhone => "bid_spec_needs_phone",
            BlockReason::CampaignNeedsPhone => "campaign_needs_phone",
        }
    }

    /// The Graph error code the sender's SDK will see.
    pub fn code(self) -> u32 {
        match self {
            BlockReason::AuthTemplateNeedsPhone
            | BlockReason::BidSpecNeedsPhone
            | BlockReason::CampaignNeedsPhone => 131062,
            _ => 100,
        }
    }

    /// What was wrong and what to send instead, in plain words. Never echoes
    /// the identifier itself: error bodies end up in client logs.
    pub fn message(self) -> &'static str {
        match self {
            BlockReason::UsernameTarget {
                recased_bsuid: false,
            } => {
                "Usernames cannot be message targets. Send to the user's phone number in `to` or to their BSUID in `recipient`."
            }
            BlockReason::UsernameTarget {
                recased_bsuid: true,
            } => {
                "Usernames cannot be message targets. This value looks like a BSUID whose case was changed: BSUIDs are case-sensitive, send it exactly as the webhook gave it."
            }
            BlockReason::InvalidRecipient => {
                "The recipient is neither a phone number (up to 15 digits) nor a BSUID (e.g. US.13491208655302741918)."
            }
            BlockReason::MissingRecipient => {
                "The send has no recipient. Put a phone number in `to` or a BSUID in `recipient`."
            }
            BlockReason::ConflictingRecipients => {
                "`to` and `recipient` name two different people. Send one phone number in `to` and/or that person's BSUID in `recipient`."
            }
            BlockReason::AuthTemplateNeedsPhone => {
                "Authentication templates cannot be sent to a BSUID and no phone number is known for this recipient. Send it to the user's phone number in `to`."
            }
            BlockReason::BidSpecNeedsPhone => {
                "Marketing messages with bid_spec cannot be sent to a BSUID and no phone number is known for this recipient. Send it to the user's phone number in `to`."
            }
            BlockReason::CampaignNeedsPhone => {
                "Campaign sends need a phone number and none is known for this BSUID. Send it to the user's phone number in `to`, or leave this recipient out of the campaign."
            }
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rewrite did, for the decision header and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    /// Row 5: a BSUID left `to` for `recipient`.
    pub to_recipient: bool,
    /// Row 6: a phone left `recipient` for `to`.
    pub recipient_to: bool,
    /// Row 8: a known phone was added for a BSUID.
    pub resolved: bool,
}

impl Actions {
    pub fn any(self) -> bool {
        self.to_recipient || self.recipient_to || self.resolved
    }
}

/// The outcome of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Row 11 with nothing to change, or row 1: the original bytes go upstream.
    Forward,
    /// Rows 5, 6, 8: the recipient fields become these.
    Rewrite {
        to: Target,
        recipient: Target,
        actions: Actions,
    },
    Block(BlockReason),
}

/// Rows 1–4 and 7: make sense of the two recipient fields.
pub fn address<'a>(facts: &Facts<'a>, policy: &Policy) -> Addressing<'a> {
    if facts.group {
        return Addressing::Untouched;
    }
    let fields = [(facts.to, Field::To), (facts.recipient, Field::Recipient)];
    let present = || {
        fields
            .iter()
            .filter_map(|(r, field)| r.map(|r| (r, *field)))
    };

    if let Some((username, _)) = present().find(|(r, _)| r.class == IdClass::Username) {
        if !policy.block_usernames {
            return Addressing::Untouched;
        }
        let recased_bsuid = super::identifier::looks_like_recased_bsuid(username.value);
        return Addressing::Blocked(BlockReason::UsernameTarget { recased_bsuid });
    }
    if present().any(|(r, _)| r.class == IdClass::Invalid) {
        return Addressing::Blocked(BlockReason::InvalidRecipient);
    }

    let mut phone: Option<Located<'a>> = None;
    let mut bsuid: Option<Located<'a>> = None;
    for (r, field) in present() {
        let located = Located {
            value: r.value,
            field,
        };
        let (slot, same) = if r.class == IdClass::Phone {
            (&mut phone, same_phone as fn(&str, &str) -> bool)
        } else {
            (&mut bsuid, str::eq as fn(&str, &str) -> bool)
        };
        match slot {
            // The same identifier in both fields: keep the `to` one (seen first)
            // so that a BSUID duplicated into `to` still gets moved out of it.
            Some(first) if same(first.value, r.value) => {}
            Some(_) => return Addressing::Blocked(BlockReason::ConflictingRecipients),
            None => *slot = Some(located),
        }
    }
    if phone.is_none() && bsuid.is_none() {
        return Addressing::Blocked(BlockReason::MissingRecipient);
    }
    Addressing::Person(Person { phone, bsuid })
}

/// Two spellings of one phone number (`+1 631-555-1234`, `16315551234`) are the same phone.
fn same_phone(a: &str, b: &str) -> bool {
    let digits = |s: &'_ str| s.bytes().filter(u8::is_ascii_digit).collect::<Vec<_>>();
    digits(a) == digits(b)
}

/// Rows 5, 6 and 8–11 for a person. `known_phone` is what the identity store
/// knows for the BSUID (looked up only for BSUID-only sends).
pub fn decide(
    person: &Person<'_>,
    kind: MessageKind,
    known_phone: Option<&str>,
    policy: &Policy,
) -> Decision {
    let mut actions = Actions::default();
    let recipient = match person.bsuid {
        Some(bsuid) => {
            actions.to_recipient = bsuid.field == Field::To;
            bsuid.field.keep()
        }
        None => Target::Absent,
    };
    let to = match (person.phone, person.bsuid) {
        (Some(phone), _) => {
            actions.recipient_to = phone.field == Field::Recipient;
            phone.field.keep()
        }
        (None, _) => {
            let needs_phone = needs_phone(kind, policy);
            match known_phone {
                Some(phone) if policy.prefer_phone || needs_phone.is_some() => {
                    actions.resolved = true;
                    Target::Value(phone.to_owned())
                }
                _ => match needs_phone {
                    Some(reason) => return Decision::Block(reason),
                    None => Target::Absent,
                },
            }
        }
    };
    if actions.any() {
        Decision::Rewrite {
            to,
            recipient,
            actions,
        }
    } else {
        Decision::Forward
    }
}

/// Rows 9 and 10: why this message cannot go to a BSUID alone, if it cannot.
fn needs_phone(kind: MessageKind, policy: &Policy) -> Option<BlockReason> {
    if kind.authentication && policy.auth_templates_require_phone {
        Some(BlockReason::AuthTemplateNeedsPhone)
    } else if kind.bid_spec {
        Some(BlockReason::BidSpecNeedsPhone)
    } else if kind.campaign && policy.campaign_requires_phone {
        Some(BlockReason::CampaignNeedsPhone)
    } else {
        None
    }
}
