//! CardDAV sources against real servers (Radicale and Xandikos from PyPI, see
//! `tests/support/dav.rs`), through the real binary and the local Telegram test server.

use crate::dav::{self, DavServer, Kind};

/// The harness itself: both servers start, take cards, report changes by `sync-collection`,
/// refuse a token made invalid (Radicale 403, Xandikos 412, both with `valid-sync-token`),
/// and come back on the same port after a stop. Everything else here leans on this.
#[tokio::test]
async fn the_test_servers_behave_as_the_tests_assume() {
    for kind in [Kind::Radicale, Kind::Xandikos] {
        let Some(mut server) = DavServer::start(kind).await else {
            return;
        };
        let book = "addressbook";
        let cards: Vec<String> = (0..3)
            .map(|i| dav::card(&format!("u{i}"), "Person", &i.to_string(), "+4915100000000"))
            .collect();
        if kind == Kind::Radicale {
            server.create_address_book_with(book, &cards).await;
        } else {
            for card in &cards {
                let uid = card.lines().find_map(|l| l.strip_prefix("UID:")).unwrap();
                server.put_card(book, &format!("{uid}.vcf"), card).await;
            }
        }
        let token = server.sync_token(book).await;
        assert_eq!(sync_status(&server, book, &token).await.0, 207, "{kind:?}");

        server.delete_card(book, "u0.vcf").await;
        server.invalidate_sync_token(book, &token).await;
        let (status, body) = sync_status(&server, book, &token).await;
        let refused = if kind == Kind::Radicale { 403 } else { 412 };
        assert_eq!(status, refused, "{kind:?}: {body}");
        assert!(body.contains("valid-sync-token"), "{kind:?}: {body}");

        let port = server.port();
        server.stop();
        assert!(
            reqwest::get(server.url("/")).await.is_err(),
            "{kind:?} still answers after stop"
        );
        server.restart().await;
        assert_eq!(server.port(), port);
        let (status, body) = sync_status(&server, book, "").await;
        assert_eq!(status, 207, "{kind:?}: {body}");
        // Radicale's initial listing still names a deleted card, as 404, from its history.
        assert!(
            body.split("response>")
                .filter(|row| row.contains("u0.vcf"))
                .all(|row| row.contains("404")),
            "{kind:?}: {body}"
        );
        assert!(body.contains("u1.vcf") && body.contains("u2.vcf"), "{body}");
        if kind == Kind::Radicale {
            let requests = server.requests();
            assert!(
                requests.contains(&format!("REPORT {}", server.book_path(book))),
                "{requests:?}\n{}",
                server.log()
            );
        }
    }
}

/// `sync-collection` with `token` (empty: the initial listing): status and body.
async fn sync_status(server: &DavServer, book: &str, token: &str) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(
            reqwest::Method::from_bytes(b"REPORT").unwrap(),
            server.book_url(book),
        )
        .header("Depth", "1")
        .header("Content-Type", "application/xml")
        .body(format!(
            r#"<sync-collection xmlns="DAV:"><sync-token>{token}</sync-token><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>"#
        ));
    if let Some((user, password)) = server.credentials() {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}
