//! The send decision of docs/design.md §2, as pure functions over plain values.
//!
//! Deciding happens in two steps because the second needs facts that cost
//! something to get: [`address`] looks only at the two recipient fields
//! (rows 1–4 and 7), then, for a person, the caller looks up a known phone and
//! the message kind only when they can matter, and [`decide`] finishes the
//! table (rows 5, 6 and 8–11).

use std::fmt;

use super::payload::Target;
use crate::identifier::IdClass;

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
    /// Row 9, for the other message Meta refuses to a BSUID (docs/cloud-api.md §2).
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
        // Group ids are opaque, but a username cannot be one: such a
        // "group" is a username that an SDK guessed was a group id (pywa
        // does this for any value that is not all digits).
        let username = facts
            .to
            .is_some_and(|to| crate::identifier::is_username_not_group(to.value));
        return if username && policy.block_usernames {
            Addressing::Blocked(BlockReason::UsernameTarget {
                recased_bsuid: false,
            })
        } else {
            Addressing::Untouched
        };
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
        let recased_bsuid = crate::identifier::looks_like_recased_bsuid(username.value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::classify;

    const PHONE: &str = "+1 (631) 555-1234";
    const PHONE_DIGITS: &str = "16315551234";
    const BSUID: &str = "US.13491208655302741918";
    const PARENT: &str = "US.ENT.11815799212886844830";

    fn recipient(value: &str) -> Recipient<'_> {
        Recipient {
            value,
            class: classify(value),
        }
    }

    fn facts<'a>(to: Option<&'a str>, recipient_field: Option<&'a str>) -> Facts<'a> {
        Facts {
            group: false,
            to: to.map(recipient),
            recipient: recipient_field.map(recipient),
        }
    }

    /// Runs the whole table for one send.
    fn table(
        facts: &Facts<'_>,
        kind: MessageKind,
        known: Option<&str>,
        policy: &Policy,
    ) -> Decision {
        match address(facts, policy) {
            Addressing::Untouched => Decision::Forward,
            Addressing::Blocked(reason) => Decision::Block(reason),
            Addressing::Person(person) => decide(&person, kind, known, policy),
        }
    }

    fn run(to: Option<&str>, recipient_field: Option<&str>) -> Decision {
        table(
            &facts(to, recipient_field),
            MessageKind::default(),
            None,
            &Policy::default(),
        )
    }

    const AUTH: MessageKind = MessageKind {
        authentication: true,
        bid_spec: false,
        campaign: false,
    };
    const CAMPAIGN: MessageKind = MessageKind {
        authentication: false,
        bid_spec: false,
        campaign: true,
    };

    fn rewrite(to: Target, recipient: Target, actions: Actions) -> Decision {
        Decision::Rewrite {
            to,
            recipient,
            actions,
        }
    }

    const MOVED_TO_RECIPIENT: Actions = Actions {
        to_recipient: true,
        recipient_to: false,
        resolved: false,
    };
    const MOVED_RECIPIENT_TO: Actions = Actions {
        to_recipient: false,
        recipient_to: true,
        resolved: false,
    };
    const RESOLVED: Actions = Actions {
        to_recipient: false,
        recipient_to: false,
        resolved: true,
    };

    #[test]
    fn row_1_group_sends_are_untouched() {
        let group = |to| Facts {
            group: true,
            to: Some(recipient(to)),
            recipient: None,
        };
        for id in [
            "120363044444444444@g.us",
            "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD",
        ] {
            assert_eq!(
                address(&group(id), &Policy::default()),
                Addressing::Untouched
            );
        }
        // A username sent as a "group" (pywa's guess) is row 2.
        assert_eq!(
            address(&group("pablomorales"), &Policy::default()),
            Addressing::Blocked(BlockReason::UsernameTarget {
                recased_bsuid: false
            })
        );
    }

    #[test]
    fn row_2_usernames_are_blocked() {
        let username = Decision::Block(BlockReason::UsernameTarget {
            recased_bsuid: false,
        });
        assert_eq!(run(Some("@pablo.m"), None), username);
        assert_eq!(run(None, Some("pablo.morales")), username);
        assert_eq!(
            run(Some(PHONE), Some("@pablo.m")),
            username,
            "a username anywhere blocks"
        );
        assert_eq!(
            run(Some("us.13491208655302741918"), None),
            Decision::Block(BlockReason::UsernameTarget {
                recased_bsuid: true
            })
        );
        let lenient = Policy {
            block_usernames: false,
            ..Policy::default()
        };
        let sent = table(
            &facts(Some("@pablo.m"), None),
            MessageKind::default(),
            None,
            &lenient,
        );
        assert_eq!(sent, Decision::Forward, "switched off: Meta decides");
    }

    #[test]
    fn row_3_junk_is_blocked() {
        for junk in ["", "+", "1234567890123456", "hello world", "   "] {
            assert_eq!(
                run(Some(junk), None),
                Decision::Block(BlockReason::InvalidRecipient),
                "{junk:?}"
            );
        }
        assert_eq!(
            run(Some(PHONE), Some("??")),
            Decision::Block(BlockReason::InvalidRecipient)
        );
    }

    #[test]
    fn row_4_nothing_to_send_to() {
        assert_eq!(
            run(None, None),
            Decision::Block(BlockReason::MissingRecipient)
        );
    }

    #[test]
    fn row_5_bsuid_in_to_moves_to_recipient() {
        let moved = rewrite(Target::Absent, Target::FromTo, MOVED_TO_RECIPIENT);
        assert_eq!(run(Some(BSUID), None), moved);
        assert_eq!(run(Some(PARENT), None), moved);
        assert_eq!(
            run(Some(BSUID), Some(BSUID)),
            rewrite(Target::Absent, Target::FromTo, MOVED_TO_RECIPIENT),
            "the same BSUID in both: `to` must still lose it"
        );
    }

    #[test]
    fn row_6_phone_in_recipient_moves_to_to() {
        assert_eq!(
            run(None, Some(PHONE)),
            rewrite(Target::FromRecipient, Target::Absent, MOVED_RECIPIENT_TO)
        );
        assert_eq!(
            run(Some(BSUID), Some(PHONE)),
            rewrite(
                Target::FromRecipient,
                Target::FromTo,
                Actions {
                    to_recipient: true,
                    recipient_to: true,
                    resolved: false
                }
            ),
            "swapped fields are swapped back"
        );
    }

    #[test]
    fn row_7_two_people_are_blocked() {
        let conflict = Decision::Block(BlockReason::ConflictingRecipients);
        assert_eq!(run(Some(PHONE), Some("16505551234")), conflict);
        assert_eq!(run(Some(BSUID), Some("US.99")), conflict);
        assert_eq!(run(Some(BSUID), Some(PARENT)), conflict);
        assert_eq!(
            run(Some(PHONE), Some(PHONE_DIGITS)),
            Decision::Forward,
            "one phone, two spellings"
        );
    }

    #[test]
    fn row_8_known_phone_is_added() {
        let resolved = Target::Value(PHONE_DIGITS.into());
        let f = facts(None, Some(BSUID));
        assert_eq!(
            table(
                &f,
                MessageKind::default(),
                Some(PHONE_DIGITS),
                &Policy::default()
            ),
            rewrite(resolved.clone(), Target::FromRecipient, RESOLVED)
        );
        let f = facts(Some(BSUID), None);
        assert_eq!(
            table(
                &f,
                MessageKind::default(),
                Some(PHONE_DIGITS),
                &Policy::default()
            ),
            rewrite(
                resolved,
                Target::FromTo,
                Actions {
                    to_recipient: true,
                    recipient_to: false,
                    resolved: true
                }
            )
        );
        let no_prefer = Policy {
            prefer_phone: false,
            ..Policy::default()
        };
        assert_eq!(
            table(
                &facts(None, Some(BSUID)),
                MessageKind::default(),
                Some(PHONE_DIGITS),
                &no_prefer
            ),
            Decision::Forward,
            "prefer_phone off: the BSUID send stands"
        );
    }

    #[test]
    fn row_9_authentication_needs_a_phone() {
        let f = facts(None, Some(BSUID));
        let policy = Policy::default();
        assert_eq!(
            table(&f, AUTH, None, &policy),
            Decision::Block(BlockReason::AuthTemplateNeedsPhone)
        );
        let no_prefer = Policy {
            prefer_phone: false,
            ..policy
        };
        assert_eq!(
            table(&f, AUTH, Some(PHONE_DIGITS), &no_prefer),
            rewrite(
                Target::Value(PHONE_DIGITS.into()),
                Target::FromRecipient,
                RESOLVED
            ),
            "a known phone is used even with prefer_phone off"
        );
        assert_eq!(
            table(&facts(Some(PHONE), None), AUTH, None, &policy),
            Decision::Forward
        );
        let off = Policy {
            auth_templates_require_phone: false,
            ..policy
        };
        assert_eq!(table(&f, AUTH, None, &off), Decision::Forward);
        let bid = MessageKind {
            bid_spec: true,
            ..MessageKind::default()
        };
        assert_eq!(
            table(&f, bid, None, &policy),
            Decision::Block(BlockReason::BidSpecNeedsPhone)
        );
    }

    #[test]
    fn row_10_campaigns_need_a_phone() {
        let f = facts(None, Some(BSUID));
        let policy = Policy::default();
        assert_eq!(
            table(&f, CAMPAIGN, None, &policy),
            Decision::Block(BlockReason::CampaignNeedsPhone)
        );
        assert_eq!(
            table(&f, CAMPAIGN, Some(PHONE_DIGITS), &policy),
            rewrite(
                Target::Value(PHONE_DIGITS.into()),
                Target::FromRecipient,
                RESOLVED
            )
        );
        let off = Policy {
            campaign_requires_phone: false,
            ..policy
        };
        assert_eq!(table(&f, CAMPAIGN, None, &off), Decision::Forward);
        assert_eq!(
            table(&facts(Some(BSUID), None), CAMPAIGN, None, &policy),
            Decision::Block(BlockReason::CampaignNeedsPhone),
            "blocked before any move"
        );
    }

    #[test]
    fn row_11_correct_sends_are_forwarded_untouched() {
        assert_eq!(run(Some(PHONE), None), Decision::Forward);
        assert_eq!(run(None, Some(BSUID)), Decision::Forward);
        assert_eq!(
            run(Some(PHONE), Some(BSUID)),
            Decision::Forward,
            "both given: `to` wins at Meta"
        );
        assert_eq!(run(Some("16315551234"), None), Decision::Forward);
    }

    #[test]
    fn block_codes_match_the_table() {
        assert_eq!(
            BlockReason::UsernameTarget {
                recased_bsuid: false
            }
            .code(),
            100
        );
        assert_eq!(BlockReason::InvalidRecipient.code(), 100);
        assert_eq!(BlockReason::MissingRecipient.code(), 100);
        assert_eq!(BlockReason::ConflictingRecipients.code(), 100);
        assert_eq!(BlockReason::AuthTemplateNeedsPhone.code(), 131062);
        assert_eq!(BlockReason::CampaignNeedsPhone.code(), 131062);
    }
}
