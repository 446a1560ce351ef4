//! The local Telegram test server, spoken to by the real grammers client over TCP.

use std::sync::Arc;
use std::time::Duration;

use grammers_client::Client;
use grammers_mtsender::{InvocationError, NoRetries, SenderPool};
use grammers_tl_types as tl;

use crate::telegram::crypto::ServerKey;
use crate::telegram::{Fault, ServerOptions, TestServer};

/// A client on the server's seeded session, with its pool running; grammers' own retries
/// are off so that errors surface as the server sent them.
struct Connected {
    client: Client,
    _pool: tokio::task::JoinHandle<()>,
}

fn connect(server: &TestServer) -> Connected {
    let session = server.memory_session();
    let params = grammers_mtsender::ConnectionParams {
        retry_policy: Box::new(NoRetries),
        ..Default::default()
    };
    let SenderPool { runner, handle, .. } =
        SenderPool::with_configuration(Arc::clone(&session), 12345, params);
    let client = Client::new(handle);
    let pool = tokio::spawn(async move {
        runner.run().await;
    });
    Connected {
        client,
        _pool: pool,
    }
}

/// A call that hangs fails the test; a slow one should not. 30 s: the two-step test (its
/// SRP exchange) takes 3–4 s alone and failed now and then with the whole suite beside it
/// on two cores, where 10 s left too little room.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the call finished in time")
}

fn contact(client_id: i64, phone: &str, first: &str) -> tl::enums::InputContact {
    tl::enums::InputContact::InputPhoneContact(tl::types::InputPhoneContact {
        client_id,
        phone: phone.into(),
        first_name: first.into(),
        last_name: String::new(),
        note: None,
    })
}

#[test]
fn server_crypto_matches_grammers_in_both_directions() {
    let mut bytes = [0u8; 256];
    bytes
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7 + 3) as u8);
    let server = ServerKey::new(bytes);
    let client = grammers_crypto::AuthKey::from_bytes(bytes);

    // client → server: grammers encrypts, we decrypt.
    let plaintext: Vec<u8> = (0..64u8).collect();
    let mut buffer = grammers_crypto::DequeBuffer::with_capacity(128, 32);
    buffer.extend(plaintext.iter().copied());
    grammers_crypto::encrypt_data_v2(&mut buffer, &client);
    let decrypted = server.decrypt_from_client(buffer.as_ref()).unwrap();
    assert_eq!(&decrypted[..64], &plaintext[..]);

    // server → client: we encrypt, grammers decrypts.
    let mut sealed = server.encrypt_for_client(&plaintext);
    let opened = grammers_crypto::decrypt_data_v2(&mut sealed, &client).unwrap();
    assert_eq!(&opened[..64], &plaintext[..]);

    // Another key is refused as unknown, the way the server answers it with -404.
    let other = ServerKey::new([9; 256]);
    assert!(other.decrypt_from_client(buffer.as_ref()).is_err());
}

#[tokio::test]
async fn ping_and_the_first_request_go_through_init_connection() {
    let server = TestServer::start(ServerOptions::default()).await;
    let connected = connect(&server);
    let pong = within(
        connected
            .client
            .invoke(&tl::functions::Ping { ping_id: 42 }),
    )
    .await;
    let tl::enums::Pong::Pong(pong) = pong.expect("pong");
    assert_eq!(pong.ping_id, 42);
    let state = within(
        connected
            .client
            .invoke(&tl::functions::updates::GetState {}),
    )
    .await;
    assert!(state.is_ok(), "{state:?}");
    assert_eq!(server.calls_to("updates.getState").len(), 1);
    // grammers opens every connection with invokeWithLayer(initConnection(help.getConfig)).
    assert_eq!(server.calls()[0].method, "help.getConfig");
    assert_eq!(
        server.state().client_info.as_ref().map(|i| i.api_id),
        Some(12345)
    );
}

#[tokio::test]
async fn import_read_back_and_delete_contacts() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (anna, hidden) = {
        let mut state = server.state();
        (
            state.account.register("+4915100000001", false),
            state.account.register("+4915100000003", true),
        )
    };
    let connected = connect(&server);
    let imported = within(
        connected
            .client
            .invoke(&tl::functions::contacts::ImportContacts {
                contacts: vec![
                    contact(1, "+4915100000001", "Anna"),
                    contact(2, "+4915100000002", "No Account"),
                    contact(3, "+4915100000003", "Hidden"),
                ],
            }),
    )
    .await
    .expect("import");
    let tl::enums::contacts::ImportedContacts::Contacts(imported) = imported;
    let pairs: Vec<(i64, i64)> = imported
        .imported
        .iter()
        .map(|tl::enums::ImportedContact::Contact(c)| (c.user_id, c.client_id))
        .collect();
    assert_eq!(pairs, [(anna, 1)]);
    assert!(imported.retry_contacts.is_empty());
    assert_eq!(imported.users.len(), 1);
    assert_ne!(hidden, anna);
    {
        let state = server.state();
        assert_eq!(
            state.account.saved.len(),
            2,
            "no account, and hidden by privacy"
        );
        assert_eq!(state.account.contacts[&anna].first_name, "Anna");
    }

    let contacts = within(
        connected
            .client
            .invoke(&tl::functions::contacts::GetContacts { hash: 0 }),
    )
    .await
    .expect("getContacts");
    let tl::enums::contacts::Contacts::Contacts(list) = contacts else {
        panic!("expected a full list");
    };
    assert_eq!(list.contacts.len(), 1);
    assert_eq!(list.saved_count, 2);
    let hash = server.state().account.contacts_hash();
    let unchanged = within(
        connected
            .client
            .invoke(&tl::functions::contacts::GetContacts { hash }),
    )
    .await
    .expect("getContacts with hash");
    assert!(matches!(
        unchanged,
        tl::enums::contacts::Contacts::NotModified
    ));

    let deleted = within(
        connected
            .client
            .invoke(&tl::functions::contacts::DeleteByPhones {
                phones: vec!["+4915100000001".into(), "+4915100000002".into()],
            }),
    )
    .await
    .expect("deleteByPhones");
    assert!(deleted);
    let state = server.state();
    assert!(state.account.contacts.is_empty());
    assert_eq!(state.account.saved.len(), 1);
}

#[tokio::test]
async fn a_large_import_arrives_gzip_packed_and_intact() {
    let server = TestServer::start(ServerOptions::default()).await;
    let phones: Vec<String> = (0..500).map(|i| format!("+49151{i:08}")).collect();
    {
        let mut state = server.state();
        for phone in &phones {
            state.account.register(phone, false);
        }
    }
    let connected = connect(&server);
    let contacts = phones
        .iter()
        .enumerate()
        .map(|(i, p)| contact(i as i64 + 1, p, &format!("Person {i}")))
        .collect();
    let imported = within(
        connected
            .client
            .invoke(&tl::functions::contacts::ImportContacts { contacts }),
    )
    .await
    .expect("import of 500");
    let tl::enums::contacts::ImportedContacts::Contacts(imported) = imported;
    assert_eq!(imported.imported.len(), 500);
    assert_eq!(server.state().account.contacts.len(), 500);
    assert!(
        server.state().gzip_messages > 0,
        "a 500-contact import is sent gzip_packed"
    );
}

#[tokio::test]
async fn scripted_errors_arrive_as_grammers_rpc_errors() {
    let server = TestServer::start(ServerOptions::default()).await;
    let connected = connect(&server);
    for (code, message, name, value) in [
        (420, "FLOOD_WAIT_31", "FLOOD_WAIT", Some(31)),
        (400, "PHONE_NUMBER_INVALID", "PHONE_NUMBER_INVALID", None),
        (401, "AUTH_KEY_UNREGISTERED", "AUTH_KEY_UNREGISTERED", None),
        (500, "INTERNAL", "INTERNAL", None),
    ] {
        server.fail_next("contacts.importContacts", Fault::rpc(code, message));
        let result = within(
            connected
                .client
                .invoke(&tl::functions::contacts::ImportContacts {
                    contacts: vec![contact(1, "+4915100000001", "A")],
                }),
        )
        .await;
        match result {
            Err(InvocationError::Rpc(error)) => {
                assert_eq!(
                    (error.code, error.name.as_str(), error.value),
                    (code, name, value.map(|v: u32| v))
                );
            }
            other => panic!("expected an RPC error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn retry_contacts_quota_and_rate_limit() {
    let server = TestServer::start(ServerOptions {
        rate_limit: Some(crate::telegram::RateLimit {
            calls: 2,
            window: Duration::from_secs(60),
            wait_seconds: 282,
        }),
        ..ServerOptions::default()
    })
    .await;
    {
        let mut state = server.state();
        state.account.register("+4915100000001", false);
        state.account.register("+4915100000002", false);
        state.account.import_quota = Some(1);
    }
    let connected = connect(&server);
    let import = || tl::functions::contacts::ImportContacts {
        contacts: vec![
            contact(1, "+4915100000001", "A"),
            contact(2, "+4915100000002", "B"),
        ],
    };
    let tl::enums::contacts::ImportedContacts::Contacts(first) =
        within(connected.client.invoke(&import()))
            .await
            .expect("first import");
    assert_eq!(first.imported.len(), 1);
    assert_eq!(first.retry_contacts, [2]);
    server.fail_next(
        "contacts.importContacts",
        Fault::RetryPhones(vec!["+4915100000001".into()]),
    );
    let tl::enums::contacts::ImportedContacts::Contacts(second) =
        within(connected.client.invoke(&import()))
            .await
            .expect("second import");
    assert_eq!(second.retry_contacts, [1, 2]);
    let third = within(connected.client.invoke(&import())).await;
    match third {
        Err(InvocationError::Rpc(error)) => assert_eq!(
            (error.name.as_str(), error.value),
            ("FLOOD_WAIT", Some(282))
        ),
        other => panic!("expected FLOOD_WAIT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_the_server_does_not_know_fails_fast() {
    let server = TestServer::start(ServerOptions::default()).await;
    let mut data = server.session_data();
    for option in data.dc_options.values_mut() {
        option.auth_key = Some([7; 256]);
    }
    let session = Arc::new(grammers_session::storages::MemorySession::from(data));
    let params = grammers_mtsender::ConnectionParams {
        retry_policy: Box::new(NoRetries),
        ..Default::default()
    };
    let SenderPool { runner, handle, .. } = SenderPool::with_configuration(session, 12345, params);
    let client = Client::new(handle);
    let _pool = tokio::spawn(async move { runner.run().await });
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.invoke(&tl::functions::Ping { ping_id: 1 }),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "must not hang");
    assert!(
        !matches!(result, Ok(Ok(_))),
        "a foreign key must not work: {result:?}"
    );
}

#[tokio::test]
async fn salt_enforcement_is_negotiated_by_the_client() {
    let server = TestServer::start(ServerOptions {
        enforce_salt: true,
        ..ServerOptions::default()
    })
    .await;
    let connected = connect(&server);
    let pong = within(connected.client.invoke(&tl::functions::Ping { ping_id: 7 })).await;
    assert!(pong.is_ok(), "{pong:?}");
    let state = within(
        connected
            .client
            .invoke(&tl::functions::updates::GetState {}),
    )
    .await;
    assert!(state.is_ok(), "{state:?}");
}

#[tokio::test]
async fn connection_faults() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.state().account.register("+4915100000001", false);
    let connected = connect(&server);
    let import = tl::functions::contacts::ImportContacts {
        contacts: vec![contact(1, "+4915100000001", "A")],
    };
    // Warm up the connection so that faults hit the call, not the handshake.
    within(
        connected
            .client
            .invoke(&tl::functions::updates::GetState {}),
    )
    .await
    .unwrap();

    server.fail_next("contacts.importContacts", Fault::Silent);
    let silent =
        tokio::time::timeout(Duration::from_millis(500), connected.client.invoke(&import)).await;
    assert!(
        silent.is_err(),
        "a silent server leaves the call hanging (the daemon times out)"
    );

    let connected = connect(&server);
    server.fail_next("contacts.importContacts", Fault::DropBeforeProcessing);
    let dropped = within(connected.client.invoke(&import)).await;
    assert!(
        matches!(
            dropped,
            Err(InvocationError::Io(_)) | Err(InvocationError::Dropped(..))
        ),
        "{dropped:?}"
    );
    assert!(
        server.state().account.contacts.is_empty(),
        "nothing applied"
    );

    let connected = connect(&server);
    server.fail_next("contacts.importContacts", Fault::ApplyThenDrop);
    let lost = within(connected.client.invoke(&import)).await;
    assert!(lost.is_err(), "the reply is lost: {lost:?}");
    assert_eq!(
        server.state().account.contacts.len(),
        1,
        "but the call was applied"
    );
}

#[tokio::test]
async fn phone_migrate_arrives_as_grammers_migrate_error_with_its_dc() {
    let server = TestServer::start(ServerOptions::default()).await;
    let connected = connect(&server);
    server.fail_next("updates.getState", Fault::rpc(303, "PHONE_MIGRATE_2"));
    let result = within(
        connected
            .client
            .invoke(&tl::functions::updates::GetState {}),
    )
    .await;
    // A raw invoke does not follow the migration itself: the caller gets the DC to move to.
    match result {
        Err(InvocationError::Rpc(error)) => assert_eq!(
            (error.code, error.name.as_str(), error.value),
            (303, "PHONE_MIGRATE", Some(2))
        ),
        other => panic!("expected PHONE_MIGRATE_2, got {other:?}"),
    }
    assert_eq!(server.calls_to("updates.getState").len(), 1);
}

/// (code, name, value) of an RPC error.
fn rpc_error<T: std::fmt::Debug>(result: Result<T, InvocationError>) -> (i32, String, Option<u32>) {
    match result {
        Err(InvocationError::Rpc(error)) => (error.code, error.name, error.value),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dc_is_not_logged_in_until_the_authorization_is_imported_there() {
    let server = TestServer::start(ServerOptions::default()).await;
    // Telegram moved the account from DC 1 (where the session logged in) to DC 2.
    server.state().dcs.account_dc = 2;
    let connected = connect(&server);
    let client = &connected.client;
    let get_state = tl::functions::updates::GetState {};
    assert_eq!(
        rpc_error(within(client.invoke_in_dc(1, &get_state)).await),
        (303, "USER_MIGRATE".into(), Some(2))
    );
    // Only switching the home DC is not enough: DC 2 has its own key, not logged in.
    assert_eq!(
        rpc_error(within(client.invoke_in_dc(2, &get_state)).await),
        (401, "AUTH_KEY_UNREGISTERED".into(), None)
    );
    // Exported on the DC the client is logged in on, for DC 2 ...
    let tl::enums::auth::ExportedAuthorization::Authorization(exported) =
        within(client.invoke_in_dc(1, &tl::functions::auth::ExportAuthorization { dc_id: 2 }))
            .await
            .expect("export on the current DC");
    assert_eq!(exported.id, 1, "the user's id");
    let import = tl::functions::auth::ImportAuthorization {
        id: exported.id,
        bytes: exported.bytes.clone(),
    };
    // ... it logs in DC 2's key and no other.
    assert_eq!(
        rpc_error(within(client.invoke_in_dc(3, &import)).await).1,
        "AUTH_BYTES_INVALID"
    );
    within(client.invoke_in_dc(2, &import))
        .await
        .expect("import on the new DC");
    assert!(within(client.invoke_in_dc(2, &get_state)).await.is_ok());
    assert_eq!(
        rpc_error(within(client.invoke_in_dc(2, &import)).await).1,
        "AUTH_BYTES_INVALID",
        "used once"
    );
    assert_eq!(
        rpc_error(within(client.invoke_in_dc(3, &get_state)).await).1,
        "AUTH_KEY_UNREGISTERED"
    );
    assert_eq!(
        rpc_error(
            within(client.invoke_in_dc(2, &tl::functions::auth::ExportAuthorization { dc_id: 2 }))
                .await
        )
        .1,
        "DC_ID_INVALID"
    );
    assert_eq!(
        server.state().dcs.logged_in,
        std::collections::BTreeSet::from([1, 2])
    );
    let dcs: Vec<i32> = server
        .calls_to("updates.getState")
        .iter()
        .map(|c| c.dc)
        .collect();
    assert_eq!(dcs, [1, 2, 2, 3], "each call reached the DC it was sent to");
}

#[tokio::test]
async fn each_dc_has_its_own_address_and_knows_only_its_own_key() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (dc1, key1) = server.dc(1);
    let (dc2, key2) = server.dc(2);
    assert_ne!(dc1, dc2);
    assert_ne!(key1, key2);
    let ping = |data: grammers_session::SessionData| async move {
        let session = Arc::new(grammers_session::storages::MemorySession::from(data));
        let params = grammers_mtsender::ConnectionParams {
            retry_policy: Box::new(NoRetries),
            ..Default::default()
        };
        let SenderPool { runner, handle, .. } =
            SenderPool::with_configuration(session, 12345, params);
        let client = Client::new(handle);
        let pool = tokio::spawn(async move { runner.run().await });
        let result = within(client.invoke(&tl::functions::Ping { ping_id: 3 })).await;
        pool.abort();
        result
    };
    // DC 1's key at DC 2's address: unknown there (-404), as on Telegram.
    let foreign = ping(crate::telegram::session_data_for(dc2, key1)).await;
    assert!(foreign.is_err(), "{foreign:?}");
    assert!(server.calls().is_empty(), "nothing reached the server");
    let own = ping(crate::telegram::session_data_for(dc2, key2)).await;
    assert!(own.is_ok(), "{own:?}");
    assert_eq!(server.calls()[0].dc, 2);
}

#[tokio::test]
async fn contact_list_methods_round_trip() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (a, b) = {
        let mut state = server.state();
        (
            state.account.register("+4915100000001", false),
            state.account.register("+4915100000002", false),
        )
    };
    let connected = connect(&server);
    let client = &connected.client;
    within(client.invoke(&tl::functions::contacts::ImportContacts {
        contacts: vec![
            contact(1, "+4915100000001", "A"),
            contact(2, "+4915100000009", "Nobody"),
        ],
    }))
    .await
    .unwrap();
    let hash_before = server.state().account.contacts_hash();
    let access_hash = server
        .state()
        .account
        .person_by_phone("+4915100000002")
        .unwrap()
        .access_hash;
    within(client.invoke(&tl::functions::contacts::AddContact {
        add_phone_privacy_exception: false,
        id: tl::enums::InputUser::User(tl::types::InputUser {
            user_id: b,
            access_hash,
        }),
        first_name: "Bee".into(),
        last_name: "Added".into(),
        phone: String::new(),
        note: None,
    }))
    .await
    .unwrap();
    let mut ids = within(client.invoke(&tl::functions::contacts::GetContactIds { hash: 0 }))
        .await
        .unwrap();
    ids.sort_unstable();
    assert_eq!(ids, [a as i32, b as i32]);
    assert_ne!(server.state().account.contacts_hash(), hash_before);

    within(client.invoke(&tl::functions::contacts::DeleteContacts {
        id: vec![tl::enums::InputUser::User(tl::types::InputUser {
            user_id: a,
            access_hash: 0,
        })],
    }))
    .await
    .unwrap();
    assert!(
        within(client.invoke(&tl::functions::contacts::ResetSaved {}))
            .await
            .unwrap()
    );
    let users = within(client.invoke(&tl::functions::users::GetUsers {
        id: vec![tl::enums::InputUser::UserSelf],
    }))
    .await
    .unwrap();
    assert_eq!(users.len(), 1);
    let state = server.state();
    assert_eq!(state.account.contact_ids(), [b]);
    assert!(state.account.saved.is_empty());
    assert_eq!(state.account.contacts[&b].first_name, "Bee");
}

/// `contacts.getContacts(hash)`: `None` when the server says "not modified".
async fn contacts_since(client: &Client, hash: i64) -> Option<tl::types::contacts::Contacts> {
    match within(client.invoke(&tl::functions::contacts::GetContacts { hash }))
        .await
        .expect("getContacts")
    {
        tl::enums::contacts::Contacts::Contacts(list) => Some(list),
        tl::enums::contacts::Contacts::NotModified => None,
    }
}

/// The `getContacts` hash a client computes from the full list (Telegram's list hash over
/// saved_count and the sorted user ids), so the tests check the server's answers, not its
/// own idea of its hash.
fn hash_of(list: &tl::types::contacts::Contacts) -> i64 {
    let mut ids: Vec<i64> = list
        .contacts
        .iter()
        .map(|tl::enums::Contact::Contact(c)| c.user_id)
        .collect();
    ids.sort_unstable();
    let mut values = vec![i64::from(list.saved_count)];
    values.extend(ids);
    crate::telegram::account::list_hash(&values)
}

/// The current list and its hash.
async fn current(client: &Client) -> (tl::types::contacts::Contacts, i64) {
    let list = contacts_since(client, 0)
        .await
        .expect("a full list for hash 0");
    let hash = hash_of(&list);
    (list, hash)
}

fn only_user(users: &[tl::enums::User]) -> &tl::types::User {
    match users {
        [tl::enums::User::User(user)] => user,
        other => panic!("expected one user, got {other:?}"),
    }
}

fn updates_users(updates: tl::enums::Updates) -> Vec<tl::enums::User> {
    match updates {
        tl::enums::Updates::Updates(u) => u.users,
        other => panic!("expected updates, got {other:?}"),
    }
}

fn input_user(user_id: i64, access_hash: i64) -> tl::enums::InputUser {
    tl::enums::InputUser::User(tl::types::InputUser {
        user_id,
        access_hash,
    })
}

fn add_contact(
    id: tl::enums::InputUser,
    first: &str,
    last: &str,
) -> tl::functions::contacts::AddContact {
    tl::functions::contacts::AddContact {
        add_phone_privacy_exception: false,
        id,
        first_name: first.into(),
        last_name: last.into(),
        phone: String::new(),
        note: None,
    }
}

fn resolve(username: &str) -> tl::functions::contacts::ResolveUsername {
    tl::functions::contacts::ResolveUsername {
        username: username.into(),
        referer: None,
    }
}

#[tokio::test]
async fn resolve_username_finds_users_case_insensitively_and_names_its_errors() {
    let server = TestServer::start(ServerOptions {
        method_rate_limits: [(
            "contacts.resolveUsername".to_owned(),
            crate::telegram::RateLimit {
                calls: 11,
                window: Duration::from_secs(60),
                wait_seconds: 38,
            },
        )]
        .into(),
        ..ServerOptions::default()
    })
    .await;
    let (alice, bob) = {
        let mut state = server.state();
        (
            state
                .account
                .register_username(Some("+4915100000001"), "Alice_1"),
            state.account.register_username(None, "bobby"),
        )
    };
    let connected = connect(&server);
    let client = &connected.client;

    for (asked, user_id, username) in [
        ("alice_1", alice, "Alice_1"),
        ("ALICE_1", alice, "Alice_1"),
        ("bobby", bob, "bobby"),
    ] {
        let tl::enums::contacts::ResolvedPeer::Peer(peer) = within(client.invoke(&resolve(asked)))
            .await
            .expect("resolveUsername");
        assert_eq!(
            peer.peer,
            tl::enums::Peer::User(tl::types::PeerUser { user_id }),
            "{asked}"
        );
        let user = only_user(&peer.users);
        let person = server.state().account.people[&user_id].clone();
        assert_eq!(user.id, user_id);
        assert_eq!(user.access_hash, Some(person.access_hash), "{asked}");
        assert_eq!(
            user.username.as_deref(),
            Some(username),
            "as the user wrote it"
        );
        assert!(!user.contact, "not a contact yet");
        assert_eq!(user.phone, None, "a stranger's number is not shown");
    }

    for (asked, error) in [
        ("@bobby", "USERNAME_INVALID"),
        ("", "USERNAME_INVALID"),
        ("1bobby", "USERNAME_INVALID"),
        ("bob by", "USERNAME_INVALID"),
        ("bobby_", "USERNAME_INVALID"),
        ("nobody_here", "USERNAME_NOT_OCCUPIED"),
    ] {
        let result = within(client.invoke(&resolve(asked))).await;
        assert_eq!(
            rpc_error(result),
            (400, error.to_owned(), None),
            "{asked:?}"
        );
    }

    // Bob takes another username: the old one is free, the new one finds the same user.
    server
        .state()
        .account
        .change_username(bob, Some("robert_b"));
    let old = within(client.invoke(&resolve("bobby"))).await;
    assert_eq!(
        rpc_error(old),
        (400, "USERNAME_NOT_OCCUPIED".to_owned(), None)
    );
    let tl::enums::contacts::ResolvedPeer::Peer(peer) =
        within(client.invoke(&resolve("robert_b"))).await.unwrap();
    assert_eq!(only_user(&peer.users).id, bob);

    // The twelfth call in the window is over the method's own limit; other methods are not.
    let limited = within(client.invoke(&resolve("robert_b"))).await;
    assert_eq!(rpc_error(limited), (420, "FLOOD_WAIT".to_owned(), Some(38)));
    within(client.invoke(&tl::functions::contacts::GetContacts { hash: 0 }))
        .await
        .expect("other methods keep their own (here: no) limit");
    assert_eq!(server.calls_to("contacts.resolveUsername").len(), 12);
}

#[tokio::test]
async fn add_contact_adds_renames_and_refuses_as_telegram_documents() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (bob, carol) = {
        let mut state = server.state();
        (
            state.account.register_username(None, "bobby"),
            state
                .account
                .register_username(Some("+4915100000003"), "carol_c"),
        )
    };
    let connected = connect(&server);
    let client = &connected.client;
    let (_, empty_hash) = current(client).await;

    let tl::enums::contacts::ResolvedPeer::Peer(peer) =
        within(client.invoke(&resolve("Bobby"))).await.unwrap();
    let access_hash = only_user(&peer.users).access_hash.unwrap();
    let users = updates_users(
        within(client.invoke(&add_contact(input_user(bob, access_hash), "Bob", "Builder")))
            .await
            .expect("addContact"),
    );
    let user = only_user(&users);
    assert_eq!(
        (user.id, user.contact, user.username.as_deref()),
        (bob, true, Some("bobby"))
    );
    assert_eq!(user.first_name.as_deref(), Some("Bob"));
    assert_eq!(user.phone, None, "bob has no number we know");

    // A new contact changes the hash; the list shows bob with his username, no number.
    assert!(contacts_since(client, empty_hash).await.is_some());
    let (list, added_hash) = current(client).await;
    let listed = only_user(&list.users);
    assert_eq!(
        (
            listed.id,
            listed.username.as_deref(),
            listed.phone.as_deref()
        ),
        (bob, Some("bobby"), None)
    );
    assert_eq!(listed.access_hash, Some(access_hash));

    // A rename: the names change, the hash (ids and saved count) does not, as on Telegram.
    within(client.invoke(&add_contact(input_user(bob, access_hash), "Robert", "")))
        .await
        .expect("rename");
    assert!(contacts_since(client, added_hash).await.is_none());
    assert_eq!(server.state().account.contacts[&bob].first_name, "Robert");
    assert_eq!(server.state().account.contacts[&bob].last_name, "");

    // Refusals change nothing.
    let carol_hash = server.state().account.people[&carol].access_hash;
    for (request, error) in [
        (
            add_contact(input_user(carol, carol_hash ^ 1), "Carol", ""),
            "CONTACT_ID_INVALID",
        ),
        (
            add_contact(input_user(987_654, 1), "Nobody", ""),
            "CONTACT_ID_INVALID",
        ),
        (
            add_contact(tl::enums::InputUser::UserSelf, "Me", ""),
            "CONTACT_ID_INVALID",
        ),
        (
            add_contact(input_user(carol, carol_hash), "", "Last only"),
            "CONTACT_NAME_EMPTY",
        ),
        (
            add_contact(input_user(carol, carol_hash), "  ", ""),
            "CONTACT_NAME_EMPTY",
        ),
        (
            add_contact(input_user(bob, access_hash), "", ""),
            "CONTACT_NAME_EMPTY",
        ),
    ] {
        let result = within(client.invoke(&request)).await;
        assert_eq!(
            rpc_error(result),
            (400, error.to_owned(), None),
            "{request:?}"
        );
    }
    assert!(contacts_since(client, added_hash).await.is_none());
    assert_eq!(server.state().account.contacts[&bob].first_name, "Robert");

    // Carol has a number: added by id, the contact carries it; the privacy exception is kept
    // and shown in the dump.
    let mut with_exception = add_contact(input_user(carol, carol_hash), "Carol", "C");
    with_exception.add_phone_privacy_exception = true;
    let users = updates_users(within(client.invoke(&with_exception)).await.unwrap());
    assert_eq!(only_user(&users).phone.as_deref(), Some("4915100000003"));
    assert!(contacts_since(client, added_hash).await.is_some());
    let dump = server.dump();
    let dumped: Vec<_> = dump["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["username"].as_str().unwrap().to_owned(),
                c["phone"].as_str().map(str::to_owned),
                c["phone_privacy_exception"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        dumped,
        [
            ("bobby".to_owned(), None, false),
            ("carol_c".to_owned(), Some("4915100000003".to_owned()), true),
        ],
        "{dump}"
    );
    assert_eq!(server.calls_to("contacts.addContact").len(), 9);
}

#[tokio::test]
async fn delete_contacts_removes_username_contacts_and_answers_with_the_users() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (anna, bob, stranger, by_hand) = {
        let mut state = server.state();
        (
            state.account.register("+4915100000001", false),
            state.account.register_username(None, "bobby"),
            state.account.register_username(None, "stranger"),
            state.account.add_by_hand("+4915100000005", "Friend"),
        )
    };
    let hash = |id: i64| server.state().account.people[&id].access_hash;
    let connected = connect(&server);
    let client = &connected.client;
    within(client.invoke(&tl::functions::contacts::ImportContacts {
        contacts: vec![contact(1, "+4915100000001", "Anna")],
    }))
    .await
    .unwrap();
    within(client.invoke(&add_contact(input_user(bob, hash(bob)), "Bob", "")))
        .await
        .unwrap();
    let (_, before) = current(client).await;

    // deleteByPhones names numbers: a contact known without one is not among them.
    within(client.invoke(&tl::functions::contacts::DeleteByPhones {
        phones: vec!["+".into(), String::new()],
    }))
    .await
    .unwrap();
    assert!(contacts_since(client, before).await.is_none());
    assert!(server.state().account.contacts.contains_key(&bob));

    let users = updates_users(
        within(client.invoke(&tl::functions::contacts::DeleteContacts {
            id: vec![
                input_user(bob, hash(bob)),
                input_user(stranger, hash(stranger)),
            ],
        }))
        .await
        .expect("deleteContacts"),
    );
    let user = only_user(&users);
    assert_eq!(
        (user.id, user.contact, user.username.as_deref()),
        (bob, false, Some("bobby")),
        "the deleted user, no longer a contact; the stranger was none"
    );
    let (list, after) = current(client).await;
    assert_ne!(after, before);
    assert!(contacts_since(client, before).await.is_some());
    let mut ids: Vec<i64> = list
        .users
        .iter()
        .map(|u| match u {
            tl::enums::User::User(u) => u.id,
            other => panic!("{other:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [anna, by_hand],
        "the imported and the hand-added contact stay"
    );

    // Deleting what is not there answers no users and leaves the hash alone.
    let users = updates_users(
        within(client.invoke(&tl::functions::contacts::DeleteContacts {
            id: vec![input_user(bob, hash(bob))],
        }))
        .await
        .unwrap(),
    );
    assert!(users.is_empty(), "{users:?}");
    assert!(contacts_since(client, after).await.is_none());
}

#[tokio::test]
async fn reset_saved_forgets_numbers_without_an_account_and_keeps_contacts() {
    let server = TestServer::start(ServerOptions::default()).await;
    let (anna, bob) = {
        let mut state = server.state();
        (
            state.account.register("+4915100000001", false),
            state.account.register_username(None, "bobby"),
        )
    };
    let bob_hash = server.state().account.people[&bob].access_hash;
    let connected = connect(&server);
    let client = &connected.client;
    within(client.invoke(&tl::functions::contacts::ImportContacts {
        contacts: vec![
            contact(1, "+4915100000001", "Anna"),
            contact(2, "+4915100000002", "No Account"),
            contact(3, "+4915100000004", "Nor Here"),
        ],
    }))
    .await
    .unwrap();
    within(client.invoke(&add_contact(input_user(bob, bob_hash), "Bob", "")))
        .await
        .unwrap();
    let (list, before) = current(client).await;
    assert_eq!((list.contacts.len(), list.saved_count), (2, 2));

    assert!(
        within(client.invoke(&tl::functions::contacts::ResetSaved {}))
            .await
            .expect("resetSaved")
    );
    assert!(
        contacts_since(client, before).await.is_some(),
        "saved_count changed"
    );
    let (list, after) = current(client).await;
    assert_eq!(list.saved_count, 0);
    assert_eq!(server.state().account.contact_ids(), [anna, bob]);

    // Nothing left to forget: the same hash.
    assert!(
        within(client.invoke(&tl::functions::contacts::ResetSaved {}))
            .await
            .unwrap()
    );
    assert!(contacts_since(client, after).await.is_none());
}

fn login_server(password: Option<(&str, &str)>) -> ServerOptions {
    ServerOptions {
        login: Some(crate::telegram::login::LoginSetup {
            code: "12345".into(),
            password: password.map(|(p, h)| (p.to_owned(), h.to_owned())),
        }),
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn login_with_a_code_and_log_out() {
    use grammers_client::client::SignInError;
    let server = TestServer::start(login_server(None)).await;
    let connected = connect(&server);
    let client = &connected.client;
    let before = within(client.invoke(&tl::functions::updates::GetState {})).await;
    assert!(
        matches!(&before, Err(InvocationError::Rpc(e)) if e.code == 401),
        "{before:?}"
    );

    let token = within(client.request_login_code("+15550000000", "0123456789abcdef"))
        .await
        .expect("code sent");
    let wrong = within(client.sign_in(&token, "00000")).await;
    assert!(matches!(wrong, Err(SignInError::InvalidCode)), "{wrong:?}");
    let user = within(client.sign_in(&token, "12345"))
        .await
        .expect("signed in");
    assert_eq!(user.id().bare_id(), Some(1));
    assert!(server.state().authorized);
    within(client.invoke(&tl::functions::updates::GetState {}))
        .await
        .expect("logged in now");

    within(client.sign_out()).await.expect("logged out");
    let after = within(client.invoke(&tl::functions::updates::GetState {})).await;
    assert!(
        matches!(&after, Err(InvocationError::Rpc(e)) if e.name == "AUTH_KEY_UNREGISTERED"),
        "{after:?}"
    );
}

#[tokio::test]
async fn two_step_verification_checks_the_srp_proof() {
    use grammers_client::client::SignInError;
    let server = TestServer::start(login_server(Some(("correct horse", "battery")))).await;
    let connected = connect(&server);
    let client = &connected.client;
    let token = within(client.request_login_code("+15550000000", "0123456789abcdef"))
        .await
        .expect("code sent");
    let password_token = match within(client.sign_in(&token, "12345")).await {
        Err(SignInError::PasswordRequired(token)) => token,
        other => panic!("expected a password request, got {other:?}"),
    };
    assert_eq!(password_token.hint(), Some("battery"));
    let retry_token = match within(client.check_password(password_token, "wrong horse")).await {
        Err(SignInError::InvalidPassword(token)) => token,
        other => panic!("expected a wrong password, got {other:?}"),
    };
    assert!(!server.state().authorized);
    within(client.check_password(retry_token, "correct horse"))
        .await
        .expect("right password");
    assert!(server.state().authorized);
}

/// The example server, run as the README documents it, with a grammers client importing
/// contacts into it and reading them back, and the dump file showing them.
#[tokio::test]
async fn the_example_server_runs_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let (dump, key_file) = (dir.path().join("tg.json"), dir.path().join("key"));
    let (mut child, addr) = spawn_example(&[
        "--register-even".as_ref(),
        "--dump".as_ref(),
        dump.as_os_str(),
        "--key-file".as_ref(),
        key_file.as_os_str(),
    ]);
    let (client, _pool) = example_client(addr, &key_file);
    within(client.invoke(&tl::functions::contacts::ImportContacts {
        contacts: vec![
            contact(1, "+4915100000002", "Even"),
            contact(2, "+4915100000003", "Odd"),
        ],
    }))
    .await
    .expect("import into the example server");
    let tl::enums::contacts::Contacts::Contacts(list) =
        within(client.invoke(&tl::functions::contacts::GetContacts { hash: 0 }))
            .await
            .expect("read back")
    else {
        panic!("expected the contact list");
    };
    assert_eq!(
        list.contacts.len(),
        1,
        "only the even number has an account"
    );
    assert_eq!(list.saved_count, 1);
    let dumped = dump_after(&dump, "contacts.getContacts", 1).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(dumped["contacts"][0]["first_name"], "Even", "{dumped}");
    assert_eq!(dumped["saved"][0]["phone"], "4915100000003");
    assert_eq!(dumped["calls_per_method"]["contacts.importContacts"], 1);
}

/// `--register-file` lines name numbers, numbers with usernames, and usernames alone; a
/// line that is neither stops the server with its line number.
#[tokio::test]
async fn the_example_registers_usernames_from_its_register_file() {
    let dir = tempfile::tempdir().unwrap();
    let (register, key_file) = (dir.path().join("people"), dir.path().join("key"));
    std::fs::write(
        &register,
        "# who has an account\n+4915100000002\n\n+49 151 00000004 @Alice_A\n@bobby\n",
    )
    .unwrap();
    let (mut child, addr) = spawn_example(&[
        "--register-file".as_ref(),
        register.as_os_str(),
        "--key-file".as_ref(),
        key_file.as_os_str(),
    ]);
    let (client, _pool) = example_client(addr, &key_file);
    let tl::enums::contacts::ImportedContacts::Contacts(imported) =
        within(client.invoke(&tl::functions::contacts::ImportContacts {
            contacts: vec![
                contact(1, "+4915100000002", "Plain"),
                contact(2, "+4915100000004", "Alice"),
                contact(3, "+4915100000006", "Nobody"),
            ],
        }))
        .await
        .expect("import");
    let mut usernames: Vec<(i64, Option<String>)> = imported
        .users
        .iter()
        .map(|u| match u {
            tl::enums::User::User(u) => (u.id, u.username.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    usernames.sort();
    assert_eq!(
        usernames
            .iter()
            .map(|(_, u)| u.as_deref())
            .collect::<Vec<_>>(),
        [None, Some("Alice_A")],
        "two of three numbers are registered, one with a username"
    );
    let resolved = within(client.invoke(&resolve("BOBBY"))).await;
    let tl::enums::contacts::ResolvedPeer::Peer(peer) = resolved.expect("@bobby is registered");
    assert_eq!(only_user(&peer.users).username.as_deref(), Some("bobby"));
    let alice = within(client.invoke(&resolve("alice_a"))).await.unwrap();
    let tl::enums::contacts::ResolvedPeer::Peer(alice) = alice;
    assert_eq!(
        only_user(&alice.users).id,
        usernames[1].0,
        "the number and the username are one user"
    );
    child.kill().unwrap();
    let _ = child.wait();

    let help = std::process::Command::new(example_path())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for form in ["`+491701234567`", "`+491701234567 @alice`", "`@bob`"] {
        assert!(help.contains(form), "--help documents {form}: {help}");
    }

    for (line, complaint) in [
        ("+4915100000002 @1bad", "`@1bad` is no Telegram username"),
        ("alice", "`alice` is neither a phone number"),
        ("@bobby\n@Bobby", "@Bobby is taken"),
    ] {
        std::fs::write(&register, format!("+4915100000008\n{line}\n")).unwrap();
        let output = std::process::Command::new(example_path())
            .args(["--listen", "127.0.0.1:0", "--register-file"])
            .arg(&register)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{line}: {stderr}");
        assert!(
            stderr.contains("line 2") || stderr.contains("line 3"),
            "{stderr}"
        );
        assert!(stderr.contains(complaint), "{line}: {stderr}");
    }
}

/// A grammers client for the example server at `addr`, with the key it wrote.
fn example_client(
    addr: std::net::SocketAddr,
    key_file: &std::path::Path,
) -> (Client, tokio::task::JoinHandle<()>) {
    let hex = std::fs::read_to_string(key_file).unwrap();
    let mut key = [0u8; 256];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
    }
    let session = Arc::new(grammers_session::storages::MemorySession::from(
        crate::telegram::session_data_for(addr, key),
    ));
    let SenderPool { runner, handle, .. } = SenderPool::new(session, 12345);
    let pool = tokio::spawn(async move { runner.run().await });
    (Client::new(handle), pool)
}

/// `--state-dir` seeds the daemon's own state and `--write-config` writes the configuration
/// for it (issue 25.15): from the demo to one's own book with nothing written by hand,
/// `contactsyncd --config FILE sync --once` syncs into the example server, logged in.
#[tokio::test]
async fn the_example_seeds_the_daemon_state_and_the_daemon_syncs_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book");
    std::fs::create_dir(&book).unwrap();
    crate::sync::write_vdir(&book, 0..4);
    let config = dir.path().join("sandbox.toml");
    let dump = dir.path().join("tg.json");
    let state = dir.path().join("state");
    let (mut child, _) = spawn_example(&[
        "--register-even".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--write-config".as_ref(),
        config.as_os_str(),
        "--source".as_ref(),
        book.as_os_str(),
        "--dump".as_ref(),
        dump.as_os_str(),
    ]);
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("path = \"{}\"", book.display())),
        "{written}"
    );
    let config_arg = config.to_str().unwrap().to_owned();
    let sync = tokio::task::spawn_blocking(move || {
        crate::support::contactsyncd(&["--config", &config_arg, "sync", "--once"], &[])
    })
    .await
    .unwrap();
    let dumped = dump_after(&dump, "contacts.importContacts", 1).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert!(sync.status.success(), "{}", crate::support::stderr(&sync));
    assert_eq!(
        dumped["calls_per_method"]["contacts.importContacts"], 1,
        "{dumped}"
    );
    assert_eq!(
        dumped["contacts"].as_array().unwrap().len(),
        2,
        "the even numbers: {dumped}"
    );
    assert_eq!(dumped["saved"].as_array().unwrap().len(), 2);
}

/// Starts the example server (built by `cargo test`) with `args`; returns it and the
/// address it printed.
fn spawn_example(args: &[&std::ffi::OsStr]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(example_path())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    (child, addr)
}

/// The example server's binary, built by `cargo test`.
fn example_path() -> std::path::PathBuf {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/telegram-test-server");
    assert!(
        example.exists(),
        "cargo test builds the example: {}",
        example.display()
    );
    example
}

/// Reads the example's dump file until `method` was called `times` (or 5 s pass).
async fn dump_after(dump: &std::path::Path, method: &str, times: u64) -> serde_json::Value {
    let mut dumped = serde_json::Value::Null;
    for _ in 0..50 {
        if let Ok(text) = std::fs::read_to_string(dump) {
            dumped = serde_json::from_str(&text).unwrap_or_default();
            if dumped["calls_per_method"][method] == times {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dumped
}
