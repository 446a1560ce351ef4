//! The fake account behind the server, following Telegram's documentation of the contacts
//! API: registered users (some hiding their number from importers, some with a public
//! username, some findable by username only), the account's contacts, the phones saved
//! without an account, an optional import quota.

use std::collections::{BTreeMap, BTreeSet};

use grammers_tl_types as tl;
use grammers_tl_types::Serializable;

/// Someone with a Telegram account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub user_id: i64,
    pub access_hash: i64,
    /// Hides the number from people who import it (privacy setting).
    pub hidden: bool,
    /// Their number (digits); `None`: nobody can find them by number (known by username only).
    pub phone: Option<String>,
    /// Their public username as they chose it (Telegram compares it case-insensitively).
    pub username: Option<String>,
}

/// An entry of the account's contact list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContactEntry {
    pub user_id: i64,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Debug, Default)]
pub struct Account {
    /// Registered users by user id (change them through the methods: `by_phone` follows).
    pub people: BTreeMap<i64, Person>,
    /// User ids by phone (digits only, as Telegram compares them).
    by_phone: BTreeMap<String, i64>,
    /// The contact list by user id.
    pub contacts: BTreeMap<i64, ContactEntry>,
    /// Imported phones without a visible account: phone → names.
    pub saved: BTreeMap<String, (String, String)>,
    /// Imports left before phones come back in `retry_contacts`; `None`: no limit.
    pub import_quota: Option<usize>,
    /// Who has an account besides those registered one by one.
    pub rule: Registration,
    /// Numbers without an account that this many Telegram users have saved: they come back
    /// in `popular_invites`.
    pub popular: BTreeMap<String, i32>,
    /// A call that carries one of these phones (digits) is refused as a whole with this
    /// 400 error, naming no item (importContacts and deleteByPhones).
    pub refuse: BTreeMap<String, String>,
    /// Users who hide their number: getContacts lists them without a phone.
    pub phone_hidden: BTreeSet<i64>,
    /// Users allowed to see the account's own number: `addContact` with
    /// `add_phone_privacy_exception` grants it (a privacy rule: deleting the contact keeps it).
    pub phone_privacy_exceptions: BTreeSet<i64>,
    next_user_id: i64,
}

/// Which numbers have a Telegram account without being registered one by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Registration {
    /// Only the registered ones.
    #[default]
    Explicit,
    /// Every number.
    All,
    /// Numbers whose last digit is even: half of any address book, predictably.
    EvenLastDigit,
}

/// Telegram compares phones by their digits: `+49 151-…` and `49151…` are one number.
pub fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

impl Account {
    pub fn new() -> Self {
        Self {
            next_user_id: 100_000,
            ..Self::default()
        }
    }

    /// Registers an account for `phone`; returns its user id.
    pub fn register(&mut self, phone: &str, hidden: bool) -> i64 {
        let key = digits(phone);
        if let Some(&user_id) = self.by_phone.get(&key) {
            return user_id;
        }
        let user_id = self.new_person(Some(key.clone()), hidden);
        self.by_phone.insert(key, user_id);
        user_id
    }

    /// Registers a user with a public `username` (without `@`); returns their user id.
    /// `phone`: the number they registered with, found by imports as usual (a number already
    /// registered gets the username); `None`: a user nobody can find by number.
    ///
    /// Panics when another user holds the username: usernames are unique on Telegram.
    pub fn register_username(&mut self, phone: Option<&str>, username: &str) -> i64 {
        self.try_register_username(phone, username)
            .unwrap_or_else(|taken| panic!("{taken}"))
    }

    /// [`Self::register_username`], refusing a username another user holds.
    pub fn try_register_username(
        &mut self,
        phone: Option<&str>,
        username: &str,
    ) -> Result<i64, String> {
        let holder = self.person_by_username(username).map(|p| p.user_id);
        let registered = phone
            .and_then(|p| self.person_by_phone(p))
            .map(|p| p.user_id);
        if holder.is_some() && holder != registered {
            return Err(format!("@{username} is taken by another user"));
        }
        let user_id = match phone {
            Some(phone) => self.register(phone, false),
            None => self.new_person(None, false),
        };
        if let Some(person) = self.people.get_mut(&user_id) {
            person.username = Some(username.to_owned());
        }
        Ok(user_id)
    }

    /// A user changes or drops their username (their user id stays): the old one no longer
    /// resolves. Panics when another user holds the new one.
    pub fn change_username(&mut self, user_id: i64, username: Option<&str>) {
        if let Some(name) = username {
            let holder = self.person_by_username(name).map(|p| p.user_id);
            assert!(
                holder.is_none_or(|h| h == user_id),
                "@{name} is taken by another test user"
            );
        }
        if let Some(person) = self.people.get_mut(&user_id) {
            person.username = username.map(str::to_owned);
        }
    }

    fn new_person(&mut self, phone: Option<String>, hidden: bool) -> i64 {
        self.next_user_id += 1;
        let user_id = self.next_user_id;
        self.people.insert(
            user_id,
            Person {
                user_id,
                access_hash: user_id.wrapping_mul(0x5DEECE66D),
                hidden,
                phone,
                username: None,
            },
        );
        user_id
    }

    /// The user registered with this number (any format: compared by digits).
    pub fn person_by_phone(&self, phone: &str) -> Option<&Person> {
        self.by_phone
            .get(&digits(phone))
            .and_then(|id| self.people.get(id))
    }

    /// The user holding `username`, compared case-insensitively as Telegram does.
    pub fn person_by_username(&self, username: &str) -> Option<&Person> {
        self.people.values().find(|p| {
            p.username
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(username))
        })
    }

    /// A contact the user added in the app (not through contactsyncd): registered, and in
    /// the contact list under `first_name`; returns its user id.
    pub fn add_by_hand(&mut self, phone: &str, first_name: &str) -> i64 {
        let user_id = self.register(phone, false);
        self.contacts.insert(
            user_id,
            ContactEntry {
                user_id,
                phone: digits(phone),
                first_name: first_name.into(),
                last_name: String::new(),
            },
        );
        user_id
    }

    /// `contacts.importContacts`: imported / retry_contacts / users. Phones without a visible
    /// account are saved (neither imported nor retried), as Telegram does. `force_retry`
    /// phones come back for retry whatever the quota says.
    pub fn import(
        &mut self,
        contacts: &[tl::types::InputPhoneContact],
        force_retry: &[String],
    ) -> tl::types::contacts::ImportedContacts {
        let mut imported = Vec::new();
        let mut popular_invites = Vec::new();
        let mut retry = Vec::new();
        let mut users = Vec::new();
        for contact in contacts {
            let key = digits(&contact.phone);
            let over_quota = match self.import_quota.as_mut() {
                Some(0) => true,
                Some(left) => {
                    *left -= 1;
                    false
                }
                None => false,
            };
            if over_quota || force_retry.iter().any(|p| digits(p) == key) {
                retry.push(contact.client_id);
                continue;
            }
            let ruled_in = match self.rule {
                Registration::Explicit => false,
                Registration::All => true,
                Registration::EvenLastDigit => key
                    .chars()
                    .last()
                    .and_then(|d| d.to_digit(10))
                    .is_some_and(|d| d % 2 == 0),
            };
            if ruled_in {
                self.register(&key, false);
            }
            match self.person_by_phone(&key).cloned() {
                Some(person) if !person.hidden => {
                    let entry = ContactEntry {
                        user_id: person.user_id,
                        phone: key.clone(),
                        first_name: contact.first_name.clone(),
                        last_name: contact.last_name.clone(),
                    };
                    self.contacts.insert(person.user_id, entry);
                    users.extend(self.user_of(person.user_id));
                    imported.push(tl::enums::ImportedContact::Contact(
                        tl::types::ImportedContact {
                            user_id: person.user_id,
                            client_id: contact.client_id,
                        },
                    ));
                }
                _ => {
                    if let Some(&importers) = self.popular.get(&key) {
                        popular_invites.push(tl::enums::PopularContact::Contact(
                            tl::types::PopularContact {
                                client_id: contact.client_id,
                                importers,
                            },
                        ));
                    }
                    self.saved
                        .insert(key, (contact.first_name.clone(), contact.last_name.clone()));
                }
            }
        }
        tl::types::contacts::ImportedContacts {
            imported,
            popular_invites,
            retry_contacts: retry,
            users,
        }
    }

    /// A user changes their number (their user id stays): `old` no longer finds them.
    pub fn change_phone(&mut self, old: &str, new: &str) {
        let (old, new) = (digits(old), digits(new));
        if let Some(user_id) = self.by_phone.remove(&old) {
            self.by_phone.insert(new.clone(), user_id);
            if let Some(person) = self.people.get_mut(&user_id) {
                person.phone = Some(new.clone());
            }
        }
        for contact in self.contacts.values_mut() {
            if contact.phone == old {
                contact.phone = new.clone();
            }
        }
    }

    /// The 400 error for a call carrying a refused phone, if any.
    pub fn refusal<'a>(
        &self,
        phones: impl IntoIterator<Item = &'a String>,
    ) -> Option<(i32, String)> {
        phones
            .into_iter()
            .find_map(|p| self.refuse.get(&digits(p)))
            .map(|message| (400, message.clone()))
    }

    /// `contacts.deleteByPhones`
    pub fn delete_by_phones(&mut self, phones: &[String]) {
        for phone in phones {
            let key = digits(phone);
            // A contact known without a number has an empty phone: no phone names it.
            if key.is_empty() {
                continue;
            }
            self.contacts.retain(|_, c| c.phone != key);
            self.saved.remove(&key);
        }
    }

    /// `contacts.deleteContacts`: removes the users that are contacts (by id, whatever they
    /// were added by: import, `addContact`, by hand); returns them as they are now, no longer
    /// contacts, for the `Updates` Telegram answers with. Others in `ids` are ignored.
    pub fn delete_contacts(&mut self, ids: &[tl::enums::InputUser]) -> Vec<tl::enums::User> {
        let mut removed = Vec::new();
        for id in ids {
            if let tl::enums::InputUser::User(u) = id
                && self.contacts.remove(&u.user_id).is_some()
            {
                removed.extend(self.user_of(u.user_id));
            }
        }
        removed
    }

    /// `contacts.addContact`: adds the user (by id and access hash, e.g. from
    /// `contacts.resolveUsername`) under these names, or renames the contact; records
    /// `add_phone_privacy_exception`. Errors as Telegram documents them: an unknown user or a
    /// wrong access hash `CONTACT_ID_INVALID`, an empty first name `CONTACT_NAME_EMPTY`.
    pub fn add_contact(
        &mut self,
        request: &tl::functions::contacts::AddContact,
    ) -> Result<tl::enums::User, (i32, String)> {
        let invalid = || (400, "CONTACT_ID_INVALID".to_owned());
        let tl::enums::InputUser::User(input) = &request.id else {
            return Err(invalid());
        };
        let person = self
            .people
            .get(&input.user_id)
            .filter(|p| p.access_hash == input.access_hash)
            .ok_or_else(invalid)?;
        if request.first_name.trim().is_empty() {
            return Err((400, "CONTACT_NAME_EMPTY".into()));
        }
        let entry = ContactEntry {
            user_id: person.user_id,
            phone: person.phone.clone().unwrap_or_default(),
            first_name: request.first_name.clone(),
            last_name: request.last_name.clone(),
        };
        if request.add_phone_privacy_exception {
            self.phone_privacy_exceptions.insert(entry.user_id);
        }
        let user_id = entry.user_id;
        self.contacts.insert(user_id, entry);
        self.user_of(user_id).ok_or_else(invalid)
    }

    /// `contacts.resolveUsername`: the user holding `username` (case-insensitive), with their
    /// access hash. A name that cannot be a username (tdlib's rule: a letter first, then
    /// letters, digits and single `_`, not ending in `_`, at most 32; `@` is no part of it)
    /// answers `USERNAME_INVALID`, a free one `USERNAME_NOT_OCCUPIED`.
    pub fn resolve_username(
        &self,
        username: &str,
    ) -> Result<tl::enums::contacts::ResolvedPeer, (i32, String)> {
        if !could_be_username(username) {
            return Err((400, "USERNAME_INVALID".into()));
        }
        let person = self
            .person_by_username(username)
            .ok_or((400, "USERNAME_NOT_OCCUPIED".to_owned()))?;
        Ok(tl::enums::contacts::ResolvedPeer::Peer(
            tl::types::contacts::ResolvedPeer {
                peer: tl::enums::Peer::User(tl::types::PeerUser {
                    user_id: person.user_id,
                }),
                chats: Vec::new(),
                users: self.user_of(person.user_id).into_iter().collect(),
            },
        ))
    }

    /// `contacts.resetSaved`: forgets the imported numbers without an account; contacts stay.
    pub fn reset_saved(&mut self) {
        self.saved.clear();
    }

    /// A user as the methods return them: a contact under the names the account gave them
    /// (`contact` set), anyone else under their username as profile name and without a
    /// number; with username and access hash.
    pub fn user_of(&self, user_id: i64) -> Option<tl::enums::User> {
        let person = self.people.get(&user_id);
        let entry = match self.contacts.get(&user_id) {
            Some(entry) => entry.clone(),
            None => {
                let person = person?;
                ContactEntry {
                    user_id,
                    phone: String::new(),
                    first_name: person.username.clone().unwrap_or_else(|| "User".into()),
                    last_name: String::new(),
                }
            }
        };
        let mut user = user(&entry, person.map_or(0, |p| p.access_hash), false);
        if let tl::enums::User::User(u) = &mut user {
            u.contact = self.contacts.contains_key(&user_id);
            u.username = person.and_then(|p| p.username.clone());
            if entry.phone.is_empty() || self.phone_hidden.contains(&user_id) {
                u.phone = None;
            }
        }
        Some(user)
    }

    /// Sorted user ids of the contact list.
    pub fn contact_ids(&self) -> Vec<i64> {
        self.contacts.keys().copied().collect()
    }

    /// The 64-bit list hash of core.telegram.org/api/offsets over the saved count and the
    /// sorted contact user ids.
    pub fn contacts_hash(&self) -> i64 {
        let mut values = vec![self.saved.len() as i64];
        values.extend(self.contact_ids());
        list_hash(&values)
    }

    /// `contacts.getContacts`
    pub fn get_contacts(&self, hash: i64) -> tl::enums::contacts::Contacts {
        if hash != 0 && hash == self.contacts_hash() {
            return tl::enums::contacts::Contacts::NotModified;
        }
        tl::enums::contacts::Contacts::Contacts(tl::types::contacts::Contacts {
            contacts: self
                .contacts
                .values()
                .map(|c| {
                    tl::enums::Contact::Contact(tl::types::Contact {
                        user_id: c.user_id,
                        mutual: false,
                    })
                })
                .collect(),
            saved_count: self.saved.len() as i32,
            users: self
                .contacts
                .keys()
                .filter_map(|&id| self.user_of(id))
                .collect(),
        })
    }
}

/// Whether `name` could be a username at all (tdlib's `is_valid_username`): 1–32 of a–z,
/// A–Z, 0–9 and `_`, a letter first, no `_` last, no `__`.
pub fn could_be_username(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// Telegram's hash for "not modified" checks: for each id,
/// `h ^= h >> 21; h ^= h << 35; h ^= h >> 4; h += id`.
pub fn list_hash(values: &[i64]) -> i64 {
    let mut hash: u64 = 0;
    for &value in values {
        hash ^= hash >> 21;
        hash ^= hash << 35;
        hash ^= hash >> 4;
        hash = hash.wrapping_add(value as u64);
    }
    hash as i64
}

/// A `user` as the contacts methods return it.
pub fn user(entry: &ContactEntry, access_hash: i64, is_self: bool) -> tl::enums::User {
    tl::enums::User::User(tl::types::User {
        is_self,
        contact: !is_self,
        mutual_contact: false,
        deleted: false,
        bot: false,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id: entry.user_id,
        access_hash: Some(access_hash),
        first_name: Some(entry.first_name.clone()),
        last_name: Some(entry.last_name.clone()).filter(|l| !l.is_empty()),
        username: None,
        phone: Some(entry.phone.clone()),
        photo: None,
        status: None,
        bot_info_version: None,
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    })
}

/// `updates` with no updates: what contact-changing methods answer here.
pub fn empty_updates(users: Vec<tl::enums::User>, date: i32) -> Vec<u8> {
    tl::enums::Updates::Updates(tl::types::Updates {
        updates: Vec::new(),
        users,
        chats: Vec::new(),
        date,
        seq: 0,
    })
    .to_bytes()
}

/// `config` with no DC addresses, so a client keeps the loopback ones it was seeded with.
pub fn config(date: i32) -> Vec<u8> {
    tl::enums::Config::Config(tl::types::Config {
        default_p2p_contacts: false,
        preload_featured_stickers: false,
        revoke_pm_inbox: false,
        blocked_mode: false,
        force_try_ipv6: false,
        date,
        expires: date + 3600,
        test_mode: true,
        this_dc: 1,
        dc_options: Vec::new(),
        dc_txt_domain_name: String::new(),
        chat_size_max: 200,
        megagroup_size_max: 200_000,
        forwarded_count_max: 100,
        online_update_period_ms: 210_000,
        offline_blur_timeout_ms: 5_000,
        offline_idle_timeout_ms: 30_000,
        online_cloud_timeout_ms: 300_000,
        notify_cloud_delay_ms: 30_000,
        notify_default_delay_ms: 1_500,
        push_chat_period_ms: 60_000,
        push_chat_limit: 2,
        edit_time_limit: 172_800,
        revoke_time_limit: i32::MAX,
        revoke_pm_time_limit: i32::MAX,
        rating_e_decay: 2_419_200,
        stickers_recent_limit: 200,
        channels_read_media_period: 604_800,
        tmp_sessions: None,
        call_receive_timeout_ms: 20_000,
        call_ring_timeout_ms: 90_000,
        call_connect_timeout_ms: 30_000,
        call_packet_timeout_ms: 10_000,
        me_url_prefix: "https://t.me/".into(),
        autoupdate_url_prefix: None,
        gif_search_username: None,
        venue_search_username: None,
        img_search_username: None,
        static_maps_provider: None,
        caption_length_max: 1024,
        message_length_max: 4096,
        webfile_dc_id: 4,
        suggested_lang_code: None,
        lang_pack_version: None,
        base_lang_pack_version: None,
        reactions_default: None,
        autologin_token: None,
    })
    .to_bytes()
}
