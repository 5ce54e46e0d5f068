//! The web interface over real HTTP: logging in, the role of every page,
//! fragment and download, CSRF, the login limit, audio ranges, search and
//! the editors' forms. (The browser tests in crates/web/tests/browser drive
//! the same pages in Chromium.)

use chrono::{Duration, Utc};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use rop_domain::{ManagerId, NewUser, OfficeId, OfficeUpdate, Role};

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;
use crate::pipeline::stereo_wav;
use crate::web_store::{checklist, processed_call};

const PASSWORD: &str = "пароль-для-теста";

/// A browser's view: its cookies and the session's CSRF token.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn hidden_csrf(html: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..start + 64].to_owned()
}

/// Submits the login form as a browser does; the response to the post.
async fn post_login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    let client = no_redirects();
    let page = client.get(app.url("/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "rop_login").expect("login form cookie");
    let csrf = hidden_csrf(&page.text().await.unwrap());
    client
        .post(app.url("/login"))
        .header(COOKIE, login_cookie)
        .form(&[
            ("username", username),
            ("password", password),
            ("_csrf", &csrf),
            ("next", "/calls"),
        ])
        .send()
        .await
        .unwrap()
}

async fn login(app: &TestApp, username: &str) -> Browser {
    let response = post_login(app, username, PASSWORD).await;
    assert_eq!(response.status(), 303, "{username} logs in");
    assert_eq!(response.headers()[LOCATION], "/calls");
    let cookie = set_cookie(&response, "rop_session").expect("session cookie");
    let header = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("rop_session="))
        .unwrap();
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Lax"));
    let client = no_redirects();
    let html = client
        .get(app.url("/dashboard"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Every page carries the token for htmx; forms carry it as a field.
    let marker = "\"X-CSRF-Token\": \"";
    let start = html.find(marker).expect("hx-headers") + marker.len();
    let csrf = html[start..start + 64].to_owned();
    Browser {
        client,
        base: app.base.clone(),
        cookie,
        csrf,
    }
}

impl Browser {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        fields.extend_from_slice(form);
        self.client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

fn id(raw: &str) -> ManagerId {
    ManagerId::parse(raw).unwrap()
}

async fn add_user(app: &TestApp, username: &str, role: Role, manager: Option<&str>) {
    app.store
        .create_user(&NewUser {
            username: username.into(),
            password_hash: rop_web::password::hash(PASSWORD).unwrap(),
            role,
            manager_id: manager.map(id),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
}

/// Office o1 led by l1 with managers m1 and m2; m3 works elsewhere. One
/// processed call per manager, and a user per role.
async fn company(app: &TestApp) {
    app.store
        .upsert_offices(
            &[OfficeUpdate {
                office_id: OfficeId::parse("o1").unwrap(),
                title: Some("Центральный офис".into()),
                leader_ids: Some(vec![id("l1")]),
                manager_ids: Some(vec![id("m1"), id("m2")]),
            }],
            Utc::now(),
        )
        .await
        .unwrap();
    let yesterday = Utc::now() - Duration::days(1);
    for (call, manager, words) in [
        ("c1", "m1", "Мы обсудили скидку на окна"),
        ("c2", "m2", "Доставка будет в субботу"),
        ("c3", "m3", "Перезвоните мне завтра"),
    ] {
        let result = checklist(
            "sales",
            50.0,
            &[
                ("greeting", "Приветствие", true),
                ("budget", "Бюджет", false),
            ],
        );
        processed_call(
            app,
            call,
            manager,
            yesterday,
            &["Добрый день", words],
            Some(vec![result]),
        )
        .await;
    }
    add_user(app, "boss", Role::Admin, None).await;
    add_user(app, "lead", Role::Leader, Some("l1")).await;
    add_user(app, "seller", Role::Manager, Some("m1")).await;
}

const EVERYONE: [u16; 3] = [200, 200, 200];
const ADMIN_ONLY: [u16; 3] = [200, 403, 403];

async fn every_page_answers_each_role_as_specified(backend: Backend) {
    let app = spawn_app(backend).await;
    company(&app).await;
    // The first start made the administrator whose password is printed.
    let users = app.store.users().await.unwrap();
    assert!(users
        .iter()
        .any(|u| u.username == "admin" && u.role == Role::Admin));

    let browsers = [
        login(&app, "boss").await,
        login(&app, "lead").await,
        login(&app, "seller").await,
    ];
    // (path, [admin, leader, manager])
    let matrix: &[(&str, [u16; 3])] = &[
        ("/dashboard", EVERYONE),
        ("/dashboard?days=7", EVERYONE),
        ("/calls", EVERYONE),
        ("/calls?q=скидки", EVERYONE),
        ("/calls/c1", EVERYONE),
        ("/calls/c1/progress", EVERYONE),
        ("/calls/c2", [200, 200, 404]),
        ("/calls/c2/progress", [200, 200, 404]),
        ("/calls/c2/audio", [404, 404, 404]),
        ("/calls/c3", [200, 404, 404]),
        ("/calls/nope", [404, 404, 404]),
        ("/managers", EVERYONE),
        ("/managers/m1", EVERYONE),
        ("/managers/m2", [200, 200, 404]),
        ("/managers/m3", [200, 404, 404]),
        ("/offices", [200, 200, 403]),
        ("/offices/o1", [200, 200, 403]),
        ("/settings", ADMIN_ONLY),
        ("/settings/connection", ADMIN_ONLY),
        ("/settings/checklists", ADMIN_ONLY),
        ("/settings/checklists/new", ADMIN_ONLY),
        ("/settings/tables", ADMIN_ONLY),
        ("/settings/tables/new", ADMIN_ONLY),
        ("/settings/users", ADMIN_ONLY),
        ("/settings/engines", ADMIN_ONLY),
        ("/settings/audit", ADMIN_ONLY),
        ("/settings/integrations/zadarma", ADMIN_ONLY),
        ("/settings/integrations/amocrm", ADMIN_ONLY),
        // Not connected: the administrator is told so.
        (
            "/settings/integrations/amocrm/oauth?code=x&state=y",
            [400, 403, 403],
        ),
        ("/settings/clients", ADMIN_ONLY),
        ("/telephony", EVERYONE),
        ("/telephony/in_nope/recording", [404, 404, 404]),
    ];
    let anonymous = no_redirects();
    let login = anonymous.get(app.url("/login")).send().await.unwrap();
    let page = browsers[0].get("/dashboard").await;
    for response in [&login, &page] {
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
    for (path, expected) in matrix {
        for (browser, want) in browsers.iter().zip(expected) {
            assert_eq!(browser.status(path).await, *want, "{path}");
        }
        let response = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path} without a session");
        assert!(response.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login?next="));
    }
    // Changes: administrators only; others are refused before anything changes.
    let posts: &[(&str, &[(&str, &str)])] = &[
        (
            "/settings/connection",
            &[("min_call_duration_secs", "7"), ("manager_channel", "1")],
        ),
        ("/settings/checklists", &[("name", "Скрипт")]),
        ("/settings/tables", &[("name", "Таблица")]),
        (
            "/settings/users",
            &[
                ("username", "x"),
                ("password", "12345678"),
                ("role", "admin"),
            ],
        ),
        (
            "/settings/users/1",
            &[("role", "manager"), ("manager_id", "m1")],
        ),
        ("/settings/users/1/delete", &[]),
        ("/settings/checklists/sales/delete", &[]),
        ("/settings/checklists/sales/test-webhook", &[]),
        ("/settings/checklists/sales/try", &[("call_id", "c1")]),
        ("/settings/tables/TBL_1/delete", &[]),
        ("/settings/tables/TBL_1/test-webhook", &[]),
        ("/settings/tables/TBL_1/try", &[("call_id", "c1")]),
        ("/calls/c1/deliveries/d1/resend", &[]),
        (
            "/settings/integrations/zadarma",
            &[
                ("enabled", "on"),
                ("key", "k"),
                ("secret", "s"),
                ("route_ring_secs", "20"),
            ],
        ),
        ("/settings/integrations/zadarma/check", &[]),
        ("/settings/integrations/zadarma/pbx", &[]),
        (
            "/settings/integrations/zadarma/extensions",
            &[("ext_100", "m1")],
        ),
        (
            "/settings/clients",
            &[("phone", "+79001234567"), ("name", "Иван")],
        ),
        ("/settings/clients/79001234567/delete", &[]),
        (
            "/settings/integrations/amocrm",
            &[
                ("enabled", "on"),
                ("base_url", "https://acme.amocrm.ru"),
                ("auth_mode", "long_lived_token"),
                ("long_lived_token", "t"),
            ],
        ),
        ("/settings/integrations/amocrm/check", &[]),
        ("/settings/integrations/amocrm/sign-in", &[]),
        ("/settings/integrations/amocrm/users", &[("user_11", "m1")]),
        (
            "/settings/integrations/amocrm/exports",
            &[("date_from", "2024-05-01"), ("date_to", "2024-05-31")],
        ),
        ("/settings/integrations/amocrm/exports/1/stop", &[]),
        (
            "/settings/integrations/bitrix24",
            &[
                ("enabled", "on"),
                ("webhook_url", "https://acme.bitrix24.ru/rest/1/secret/"),
            ],
        ),
        ("/settings/integrations/bitrix24/check", &[]),
        ("/settings/integrations/bitrix24/sign-in", &[]),
        ("/settings/integrations/bitrix24/users", &[("user_1", "m1")]),
        (
            "/settings/integrations/bitrix24/exports",
            &[("date_from", "2024-05-01")],
        ),
        ("/settings/integrations/bitrix24/exports/1/stop", &[]),
    ];
    for (path, form) in posts {
        for browser in &browsers[1..] {
            assert_eq!(browser.post(path, form).await.status(), 403, "{path}");
        }
    }
    assert!(app.store.checklists().await.unwrap().is_empty());
    assert!(app.store.clients(None, 0, 10).await.unwrap().is_empty());
    for key in [
        "integration.zadarma",
        "integration.amocrm",
        "integration.bitrix24",
    ] {
        assert!(app.store.setting(key).await.unwrap().is_none(), "{key}");
    }
    assert!(app
        .store
        .tasks("amocrm.export", 5)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(app.store.users().await.unwrap().len(), 4);
    assert_eq!(
        app.store
            .connection_settings()
            .await
            .unwrap()
            .min_call_duration_secs,
        0
    );
    // The leader's list holds his office's calls only.
    let html = browsers[1].get("/calls").await.text().await.unwrap();
    assert!(html.contains("data-call=\"c1\"") && html.contains("data-call=\"c2\""));
    assert!(!html.contains("data-call=\"c3\""));
    // A manager's page is his own.
    let html = browsers[2].get("/calls").await.text().await.unwrap();
    assert!(html.contains("data-call=\"c1\"") && !html.contains("data-call=\"c2\""));
    assert!(
        !html.contains("href=\"/settings\""),
        "no settings link for a manager"
    );
}

async fn state_changes_need_the_session_token(backend: Backend) {
    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    let admin = login(&app, "boss").await;
    let form = [("min_call_duration_secs", "15"), ("manager_channel", "1")];
    let url = app.url("/settings/connection");
    let without = admin
        .client
        .post(&url)
        .header(COOKIE, &admin.cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), 403);
    let mut wrong = form.to_vec();
    wrong.push((
        "_csrf",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ));
    let wrong = admin
        .client
        .post(&url)
        .header(COOKIE, &admin.cookie)
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let foreign = admin
        .client
        .post(&url)
        .header(COOKIE, &admin.cookie)
        .header("Origin", "http://evil.example")
        .header("X-CSRF-Token", &admin.csrf)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        app.store
            .connection_settings()
            .await
            .unwrap()
            .min_call_duration_secs,
        0
    );
    assert!(app.store.audit_entries(None, 10).await.unwrap().is_empty());

    // htmx sends the token as a header.
    let by_header = admin
        .client
        .post(&url)
        .header(COOKIE, &admin.cookie)
        .header("X-CSRF-Token", &admin.csrf)
        .header("Origin", &app.base)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 303);
    let settings = app.store.connection_settings().await.unwrap();
    assert_eq!(
        (settings.min_call_duration_secs, settings.manager_channel),
        (15, 1)
    );
    let audit = app.store.audit_entries(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert!(!settings.allow_private_networks);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("boss", "connection.update")
    );

    // The private-network allowance is a box on the same form.
    let allowed = admin
        .post(
            "/settings/connection",
            &[
                ("min_call_duration_secs", "15"),
                ("manager_channel", "1"),
                ("allow_private_networks", "on"),
            ],
        )
        .await;
    assert_eq!(allowed.status(), 303);
    assert!(
        app.store
            .connection_settings()
            .await
            .unwrap()
            .allow_private_networks
    );

    // A bad value is refused with the reason, and nothing changes.
    let bad = admin
        .post(
            "/settings/connection",
            &[
                ("min_call_duration_secs", "много"),
                ("manager_channel", "0"),
            ],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("целое число секунд"));
    assert_eq!(
        app.store
            .connection_settings()
            .await
            .unwrap()
            .min_call_duration_secs,
        15
    );

    // The login form is protected too: a post without its cookie is refused.
    let forged = no_redirects()
        .post(app.url("/login"))
        .form(&[("username", "boss"), ("password", PASSWORD), ("_csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(set_cookie(&forged, "rop_session").is_none());
}

async fn failed_logins_are_limited_and_logout_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    add_user(&app, "other", Role::Admin, None).await;
    for _ in 0..5 {
        assert_eq!(
            post_login(&app, "boss", "wrong password").await.status(),
            401
        );
    }
    // Blocked now, even with the right password.
    let blocked = post_login(&app, "boss", PASSWORD).await;
    assert_eq!(blocked.status(), 429);
    assert!(set_cookie(&blocked, "rop_session").is_none());
    // The address made six failed attempts, so every name from it waits.
    assert_eq!(post_login(&app, "other", PASSWORD).await.status(), 429);

    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    let unknown = post_login(&app, "nobody", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("Неверное имя пользователя или пароль"));
    let admin = login(&app, "boss").await;
    assert_eq!(admin.status("/dashboard").await, 200);
    let out = admin.post("/logout", &[]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(
        admin.status("/dashboard").await,
        303,
        "the old cookie no longer works"
    );
}

async fn audio_is_streamed_with_ranges(backend: Backend) {
    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    let audio = stereo_wav();
    app.upload_file("rec1", audio.clone(), &[]).await;
    let admin = login(&app, "boss").await;
    let whole = admin.get("/calls/rec1/audio").await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), audio.as_slice());
    let part = admin
        .client
        .get(app.url("/calls/rec1/audio"))
        .header(COOKIE, &admin.cookie)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", audio.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &audio[100..200]);
    let past = admin
        .client
        .get(app.url("/calls/rec1/audio"))
        .header(COOKIE, &admin.cookie)
        .header("Range", format!("bytes={}-", audio.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
}

async fn the_editors_save_checked_definitions(backend: Backend) {
    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    let admin = login(&app, "boss").await;
    // Refused: a stage weight that is not a number; nothing is stored.
    let refused = admin
        .post(
            "/settings/checklists",
            &[
                ("name", "Продажа"),
                ("stage_name", "Приветствие"),
                ("stage_weight", "много"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("stages[0].weight"));
    assert!(app.store.checklists().await.unwrap().is_empty());

    let saved = admin
        .post(
            "/settings/checklists",
            &[
                ("original_id", ""),
                ("checklist_id", "sales"),
                ("name", "Продажа окон"),
                ("active", "on"),
                ("stage_id", ""),
                ("stage_name", "Приветствие"),
                ("stage_instruction", "Поздороваться и назвать себя"),
                ("stage_weight", "2"),
                ("stage_examples", "добрый день\nменя зовут"),
                ("stage_forbidden", ""),
                ("stage_id", ""),
                ("stage_name", "Бюджет"),
                ("stage_instruction", "Спросить бюджет"),
                ("stage_weight", "1"),
                ("stage_examples", "какой бюджет"),
                ("stage_forbidden", ""),
                ("webhook_url", "https://crm.example.ru/hook"),
                ("webhook_secret", "s3cret-value"),
            ],
        )
        .await;
    assert_eq!(saved.status(), 303);
    assert_eq!(saved.headers()[LOCATION], "/settings/checklists/sales");
    let stored = app.store.checklist("sales").await.unwrap().unwrap();
    assert_eq!(stored.stages.len(), 2);
    assert_eq!(
        stored.stages[0].example_phrases,
        vec!["добрый день", "меня зовут"]
    );
    assert_eq!(stored.webhook.as_ref().unwrap().secret, "s3cret-value");
    // A new checklist may not take an id in use.
    let taken = admin
        .post(
            "/settings/checklists",
            &[
                ("checklist_id", "sales"),
                ("name", "Другой"),
                ("stage_name", "Этап"),
            ],
        )
        .await;
    assert_eq!(taken.status(), 400);
    assert!(taken
        .text()
        .await
        .unwrap()
        .contains("чек-лист с таким id уже есть"));
    assert_eq!(app.store.checklists().await.unwrap().len(), 1);
    // Editing with the secret left blank keeps it; the page never shows it.
    let page = admin
        .get("/settings/checklists/sales")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("s3cret-value"));
    let edited = admin
        .post(
            "/settings/checklists",
            &[
                ("original_id", "sales"),
                ("name", "Продажа окон 2"),
                ("stage_name", "Приветствие"),
                ("stage_weight", "1"),
                ("webhook_url", "https://crm.example.ru/hook2"),
                ("webhook_secret", ""),
            ],
        )
        .await;
    assert_eq!(edited.status(), 303);
    let stored = app.store.checklist("sales").await.unwrap().unwrap();
    assert_eq!(stored.name, "Продажа окон 2");
    assert_eq!(stored.stages.len(), 1);
    assert!(!stored.active, "an unticked box switches the checklist off");
    assert_eq!(stored.webhook.unwrap().secret, "s3cret-value");

    let table = admin
        .post(
            "/settings/tables",
            &[
                ("name", "Замер"),
                ("column_key", "visit_date"),
                ("column_title", "Дата замера"),
                ("column_type", "date"),
                ("column_description", "Когда приедет замерщик"),
                ("column_values", ""),
                ("column_key", "premises"),
                ("column_title", "Помещение"),
                ("column_type", "enum"),
                ("column_description", ""),
                ("column_values", "квартира, дом, офис"),
            ],
        )
        .await;
    assert_eq!(table.status(), 303);
    let tables = app.store.tables().await.unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].columns[1].values, vec!["квартира", "дом", "офис"]);

    // «Try on a call» scores the saved checklist without storing anything.
    processed_call(
        &app,
        "tried",
        "m1",
        Utc::now(),
        &["Добрый день, меня зовут Алексей", "Здравствуйте"],
        None,
    )
    .await;
    let tried = admin
        .post("/settings/checklists/sales/try", &[("call_id", "tried")])
        .await;
    assert_eq!(tried.status(), 200);
    let fragment = tried.text().await.unwrap();
    assert!(
        fragment.contains("Приветствие") && fragment.contains("выполнен"),
        "{fragment}"
    );
    assert!(fragment.contains("не сохранён"));
    let call = app
        .store
        .call(&rop_domain::CallId::parse("tried").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(call.checklists.is_empty() && call.deliveries.is_empty());
    let untranscribed = admin
        .post("/settings/checklists/sales/try", &[("call_id", "nope")])
        .await
        .text()
        .await
        .unwrap();
    assert!(untranscribed.contains("Звонка «nope» нет"));
    // Tables need a language model; without one the preview says so.
    let table_id = tables[0].table_id.as_str().to_owned();
    let preview = admin
        .post(
            &format!("/settings/tables/{table_id}/try"),
            &[("call_id", "tried")],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(preview.contains("только языковая модель"), "{preview}");

    let audit = app.store.audit_entries(None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["table.create", "checklist.update", "checklist.create"]
    );
    assert!(
        audit.iter().all(|e| !e.details.contains("s3cret-value")),
        "secrets stay out of the log"
    );
}

async fn users_are_managed_in_the_interface(backend: Backend) {
    let app = spawn_app(backend).await;
    add_user(&app, "boss", Role::Admin, None).await;
    let admin = login(&app, "boss").await;
    // The new-user form: (password, CRM id) → status.
    let create = |password: &'static str, manager_id: &'static str| {
        let admin = &admin;
        async move {
            admin
                .post(
                    "/settings/users",
                    &[
                        ("username", "anna"),
                        ("password", password),
                        ("role", "manager"),
                        ("manager_id", manager_id),
                    ],
                )
                .await
                .status()
        }
    };
    assert_eq!(create("short", "m1").await, 400, "short password");
    assert_eq!(create("long enough", "").await, 400, "no CRM id");
    assert_eq!(create("long enough", "m1").await, 303, "created");
    assert_eq!(create("long enough", "m1").await, 400, "duplicate");
    let anna = app.store.user_credentials("anna").await.unwrap().unwrap();
    assert!(rop_web::password::verify(
        "long enough",
        &anna.password_hash
    ));
    assert_eq!(post_login(&app, "anna", "long enough").await.status(), 303);
    // Promoted, with a new password; the old one stops working.
    let updated = admin
        .post(
            &format!("/settings/users/{}", anna.user.id),
            &[
                ("role", "leader"),
                ("manager_id", "l1"),
                ("password", "another password"),
            ],
        )
        .await;
    assert_eq!(updated.status(), 303);
    let anna = app.store.user_credentials("anna").await.unwrap().unwrap();
    assert_eq!(anna.user.role, Role::Leader);
    assert_eq!(post_login(&app, "anna", "long enough").await.status(), 401);
    // An administrator cannot demote or delete himself.
    let me = app
        .store
        .user_credentials("boss")
        .await
        .unwrap()
        .unwrap()
        .user
        .id;
    let demote = admin
        .post(
            &format!("/settings/users/{me}"),
            &[("role", "manager"), ("manager_id", "m9")],
        )
        .await;
    assert_eq!(demote.status(), 400);
    let delete_me = admin
        .post(&format!("/settings/users/{me}/delete"), &[])
        .await;
    assert_eq!(delete_me.status(), 400);
    let removed = admin
        .post(&format!("/settings/users/{}/delete", anna.user.id), &[])
        .await;
    assert_eq!(removed.status(), 303);
    assert!(app.store.user_credentials("anna").await.unwrap().is_none());
}

/// Настройки → Интеграции → Zadarma, the clients directory and the
/// Телефония page, driven as an administrator, a leader and a manager
/// would, against the Zadarma double.
async fn telephony_is_set_up_and_used_in_the_interface(backend: Backend) {
    use rop_testkit::zadarma::{ZadarmaDouble, KEY, SECRET};
    let app = spawn_app(backend).await;
    company(&app).await;
    let zadarma = ZadarmaDouble::start().await;
    let admin = login(&app, "boss").await;

    let zadarma_url = zadarma.base_url();
    let form = [
        ("enabled", "on"),
        ("api_url", zadarma_url.as_str()),
        ("key", KEY),
        ("secret", SECRET),
        ("route_to_assigned_manager", "on"),
        ("route_ring_secs", "15"),
        ("analyze_recordings", "on"),
    ];
    let bad: Vec<(&str, &str)> = form
        .iter()
        .map(|&(k, v)| {
            if k == "route_ring_secs" {
                (k, "много")
            } else {
                (k, v)
            }
        })
        .collect();
    let response = admin.post("/settings/integrations/zadarma", &bad).await;
    assert_eq!(response.status(), 400);
    assert!(app
        .store
        .setting("integration.zadarma")
        .await
        .unwrap()
        .is_none());
    let response = admin.post("/settings/integrations/zadarma", &form).await;
    assert_eq!(response.status(), 303);
    let html = admin
        .get("/settings/integrations/zadarma")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains(SECRET), "the secret is never shown");
    assert!(html.contains("••••4201"));
    assert!(html.contains("/exec/Zadarma.notify"));
    let line = admin
        .post("/settings/integrations/zadarma/check", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(line.contains("Подключение работает"), "{line}");
    let response = admin.post("/settings/integrations/zadarma/pbx", &[]).await;
    assert_eq!(response.status(), 303);
    let html = admin
        .get("/settings/integrations/zadarma")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"ext_101\""), "extensions listed");
    let response = admin
        .post(
            "/settings/integrations/zadarma/extensions",
            &[("ext_101", "m1")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let response = admin
        .post(
            "/settings/integrations/zadarma/extensions",
            &[("ext_999", "m2")],
        )
        .await;
    assert_eq!(response.status(), 400, "an extension the PBX does not have");

    let response = admin
        .post(
            "/settings/clients",
            &[("phone", "позвоните"), ("name", "Кто-то")],
        )
        .await;
    assert_eq!(response.status(), 400);
    let response = admin
        .post(
            "/settings/clients",
            &[
                ("phone", "8 900 123-45-67"),
                ("name", "Иван Петров"),
                ("manager_id", "m1"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let html = admin
        .get("/settings/clients?q=иван")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("+79001234567") && html.contains("Иван Петров"));

    let url = app.url("/exec/Zadarma.notify");
    for (id, caller) in [("in_1", "+79001234567"), ("in_2", "+79990000000")] {
        let response = zadarma
            .notify(
                &url,
                &[
                    ("event", "NOTIFY_START"),
                    ("call_start", "2024-05-01 12:00:00"),
                    ("pbx_call_id", id),
                    ("caller_id", caller),
                    ("called_did", "+74951234567"),
                ],
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    // The client's call is routed to m1 and so belongs to his scope; the
    // unknown caller's belongs to nobody yet.
    let html = admin.get("/telephony").await.text().await.unwrap();
    assert!(html.contains("Иван Петров") && html.contains("+79990000000"));
    let lead = login(&app, "lead").await;
    let html = lead.get("/telephony").await.text().await.unwrap();
    assert!(html.contains("Иван Петров") && !html.contains("+79990000000"));
    let seller = login(&app, "seller").await;
    let html = seller.get("/telephony").await.text().await.unwrap();
    assert!(html.contains("направлен на 101"), "{html}");
    assert!(
        html.contains("внутренний номер 101"),
        "the dial form for his extension"
    );

    let line = seller
        .post("/telephony/call", &[("phone", "+7 900 123-45-67")])
        .await
        .text()
        .await
        .unwrap();
    assert!(line.contains("Звоним"), "{line}");
    let (path, params) = zadarma.requests().last().cloned().unwrap();
    assert_eq!(path, "/v1/request/callback/");
    assert_eq!(
        (params["from"].as_str(), params["to"].as_str()),
        ("101", "79001234567")
    );
    // The leader has no extension: nothing is dialled.
    let before = zadarma.requests().len();
    let line = lead
        .post("/telephony/call", &[("phone", "+79001234567")])
        .await
        .text()
        .await
        .unwrap();
    assert!(line.contains("не назначен"), "{line}");
    assert_eq!(zadarma.requests().len(), before);
    // No recording yet.
    assert_eq!(admin.status("/telephony/in_1/recording").await, 404);
}

/// Настройки → Интеграции → amoCRM as an administrator uses it: the
/// OAuth round trip with its `state` checked, the users' mapping, and an
/// export started, shown and stopped.
async fn amocrm_is_connected_and_exported_in_the_interface(backend: Backend) {
    use rop_testkit::amocrm::{AmocrmDouble, User, CLIENT_ID, CLIENT_SECRET};
    const REDIRECT: &str = "https://rop.example.ru/settings/integrations/amocrm/oauth";
    let app = spawn_app(backend).await;
    company(&app).await;
    let amocrm = AmocrmDouble::start().await;
    amocrm.add_user(User {
        id: 11,
        name: "Анна Смирнова".into(),
        email: "anna@example.ru".into(),
    });
    let admin = login(&app, "boss").await;
    let base = amocrm.base_url();
    let form = [
        ("enabled", "on"),
        ("base_url", base.as_str()),
        ("auth_mode", "oauth"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("redirect_uri", REDIRECT),
        ("write_note", "on"),
        ("field_mapping", "lead.field.300 = utm_source"),
        ("field_updates", "301 = score"),
    ];
    let mut bad = form.to_vec();
    bad[8] = ("field_updates", "301 = всё");
    assert_eq!(
        admin
            .post("/settings/integrations/amocrm", &bad)
            .await
            .status(),
        400
    );
    assert!(app
        .store
        .setting("integration.amocrm")
        .await
        .unwrap()
        .is_none());
    let response = admin.post("/settings/integrations/amocrm", &form).await;
    assert_eq!(response.status(), 303);
    let html = admin
        .get("/settings/integrations/amocrm")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains(CLIENT_SECRET), "the secret is never shown");
    assert!(html.contains("lead.field.300 = utm_source") && html.contains("вход не выполнен"));

    let response = admin
        .post("/settings/integrations/amocrm/sign-in", &[])
        .await;
    assert_eq!(response.status(), 303);
    let consent = url::Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    let state = consent
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let code = amocrm.issue_code(REDIRECT);
    // An answer to somebody else's sign-in is refused before amoCRM is asked.
    let forged = format!("/settings/integrations/amocrm/oauth?code={code}&state=forged");
    assert_eq!(admin.status(&forged).await, 400);
    assert_eq!(amocrm.token_grants(), 0);
    // The state was spent by the refusal: start again.
    let response = admin
        .post("/settings/integrations/amocrm/sign-in", &[])
        .await;
    let consent = url::Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    let state: String = consent
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .filter(|fresh| *fresh != state)
        .expect("a new state");
    let back = format!(
        "/settings/integrations/amocrm/oauth?code={code}&state={state}&referer=acme.amocrm.ru"
    );
    let response = admin.get(&back).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()[LOCATION],
        "/settings/integrations/amocrm?saved=signed_in"
    );
    assert_eq!(admin.status(&back).await, 400, "a state works once");
    let html = admin
        .get("/settings/integrations/amocrm")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("вход выполнен") && html.contains("Анна Смирнова"),
        "{html}"
    );
    let line = admin
        .post("/settings/integrations/amocrm/check", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(line.contains("Подключение работает"), "{line}");

    let response = admin
        .post("/settings/integrations/amocrm/users", &[("user_11", "m1")])
        .await;
    assert_eq!(response.status(), 303);
    let settings: serde_json::Value = serde_json::from_str(
        &app.store
            .setting("integration.amocrm")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(settings["users"][0]["manager_id"], "m1", "{settings}");

    let export = [
        ("date_from", "2024-05-01"),
        ("date_to", "2024-05-31"),
        ("user_ids", "11"),
        ("direction", "incoming"),
        ("min_duration_secs", "30"),
        ("max_duration_secs", ""),
    ];
    let mut wrong = export.to_vec();
    wrong[1] = ("date_to", "вчера");
    assert_eq!(
        admin
            .post("/settings/integrations/amocrm/exports", &wrong)
            .await
            .status(),
        400
    );
    let response = admin
        .post("/settings/integrations/amocrm/exports", &export)
        .await;
    assert_eq!(response.status(), 303);
    let tasks = app.store.tasks("amocrm.export", 5).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let html = admin
        .get("/settings/integrations/amocrm")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("01.05.2024 — 31.05.2024") && html.contains("Остановить выгрузку"));
    assert!(
        html.contains("hx-trigger=\"every 3s\""),
        "progress refreshes while it runs"
    );
    let stop = format!("/settings/integrations/amocrm/exports/{}/stop", tasks[0].id);
    assert_eq!(admin.post(&stop, &[]).await.status(), 303);
    let html = admin
        .get("/settings/integrations/amocrm")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("остановлена") && !html.contains("Остановить выгрузку"));
    let audit = app.store.audit_entries(None, 20).await.unwrap();
    for action in [
        "amocrm.update",
        "amocrm.sign_in",
        "amocrm.users",
        "amocrm.export",
        "amocrm.export_stop",
    ] {
        assert!(audit.iter().any(|e| e.action == action), "{action}");
    }
    assert!(audit.iter().all(|e| !e.details.contains(CLIENT_SECRET)));
}

/// Настройки → Интеграции → Bitrix24 as an administrator uses it: the
/// webhook saved with its secret never shown, the check and the users'
/// mapping, the event address, and an export started and stopped.
async fn bitrix24_is_connected_and_exported_in_the_interface(backend: Backend) {
    use rop_testkit::bitrix24::{B24User, Bitrix24Double};
    let app = spawn_app(backend).await;
    company(&app).await;
    let bitrix = Bitrix24Double::start().await;
    bitrix.add_user(B24User {
        id: 1,
        name: "Анна".into(),
        last_name: "Смирнова".into(),
        email: "anna@example.ru".into(),
        inner_phone: None,
    });
    let admin = login(&app, "boss").await;
    let webhook = bitrix.webhook_url();
    let secret = webhook
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let form = [
        ("enabled", "on"),
        ("auth_mode", "webhook"),
        ("webhook_url", webhook.as_str()),
        ("application_token", "app-token-123456"),
        ("realtime", "on"),
        ("min_duration_secs", "30"),
        ("write_comment", "on"),
    ];
    let mut bad = form.to_vec();
    bad[5] = ("min_duration_secs", "полминуты");
    assert_eq!(
        admin
            .post("/settings/integrations/bitrix24", &bad)
            .await
            .status(),
        400
    );
    assert!(app
        .store
        .setting("integration.bitrix24")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        admin
            .post("/settings/integrations/bitrix24", &form)
            .await
            .status(),
        303
    );
    let html = admin
        .get("/settings/integrations/bitrix24")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains(&secret) && !html.contains("app-token-123456"));
    assert!(html.contains("/exec/Bitrix24.event"));
    let line = admin
        .post("/settings/integrations/bitrix24/check", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(line.contains("Подключение работает"), "{line}");
    let response = admin
        .post("/settings/integrations/bitrix24/users", &[("user_1", "m1")])
        .await;
    assert_eq!(response.status(), 303);
    let html = admin
        .get("/settings/integrations/bitrix24")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Анна Смирнова"));

    let response = admin
        .post(
            "/settings/integrations/bitrix24/exports",
            &[("date_from", "завтра")],
        )
        .await;
    assert_eq!(response.status(), 400);
    let response = admin
        .post(
            "/settings/integrations/bitrix24/exports",
            &[
                ("date_from", "2026-03-01"),
                ("user_ids", "1"),
                ("min_duration_secs", "30"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let tasks = app.store.tasks("bitrix24.export", 5).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let html = admin
        .get("/settings/integrations/bitrix24")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("с 01.03.2026") && html.contains("Остановить выгрузку"));
    let stop = format!(
        "/settings/integrations/bitrix24/exports/{}/stop",
        tasks[0].id
    );
    assert_eq!(admin.post(&stop, &[]).await.status(), 303);
    let html = admin
        .get("/settings/integrations/bitrix24")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("остановлена") && !html.contains("Остановить выгрузку"));
    let audit = app.store.audit_entries(None, 20).await.unwrap();
    for action in [
        "bitrix24.update",
        "bitrix24.users",
        "bitrix24.export",
        "bitrix24.export_stop",
    ] {
        assert!(audit.iter().any(|e| e.action == action), "{action}");
    }
    assert!(audit.iter().all(|e| !e.details.contains(&secret)));
}

on_both_backends!(
    every_page_answers_each_role_as_specified,
    state_changes_need_the_session_token,
    failed_logins_are_limited_and_logout_ends_the_session,
    audio_is_streamed_with_ranges,
    the_editors_save_checked_definitions,
    users_are_managed_in_the_interface,
    telephony_is_set_up_and_used_in_the_interface,
    amocrm_is_connected_and_exported_in_the_interface,
    bitrix24_is_connected_and_exported_in_the_interface,
);
