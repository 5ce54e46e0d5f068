//! Russian sales calls of a window company, made up from phrase pools: each
//! call a different mix of lines, names, products and numbers, and each
//! stage of the sales script said (or not) as its result says, so that the
//! quotes of the checklist results come from the transcript.

use rand::rngs::StdRng;
use rand::Rng;

/// The sales script's stages: id, name, weight, done-probability of an
/// average manager.
pub const STAGES: [(&str, &str, u32, f64); 8] = [
    ("greeting", "Приветствие", 1, 0.95),
    ("company", "Представление компании и себя", 1, 0.85),
    ("needs", "Выявление потребности", 2, 0.7),
    ("presentation", "Презентация решения", 2, 0.75),
    ("objections", "Работа с возражениями", 2, 0.5),
    ("measurement", "Предложение бесплатного замера", 1, 0.6),
    ("next_step", "Договорённость о следующем шаге", 1, 0.55),
    ("farewell", "Прощание", 1, 0.9),
];

/// One line of the dialogue.
pub struct Line {
    pub manager: bool,
    pub text: String,
}

pub struct Dialogue {
    pub lines: Vec<Line>,
    /// For each stage of `STAGES`, the line that shows it done.
    pub proof: [Option<usize>; 8],
    /// Table data: measurement booked, windows, object, budget (thousands).
    pub booked: bool,
    pub windows: u32,
    pub object: &'static str,
    pub budget: u32,
}

fn pick<'a>(rng: &mut StdRng, pool: &[&'a str]) -> &'a str {
    pool[rng.gen_range(0..pool.len())]
}

const PRODUCTS: [(&str, &str); 6] = [
    ("пластиковые окна", "пластиковыми окнами"),
    ("остекление балкона", "остеклением балконов"),
    ("входную дверь", "входными дверями"),
    ("окна в частный дом", "окнами для частных домов"),
    ("межкомнатные двери", "межкомнатными дверями"),
    ("окна с ламинацией", "ламинированными окнами"),
];

const OBJECTS: [(&str, &str); 4] = [
    ("квартира", "квартиры"),
    ("дом", "частного дома"),
    ("дача", "дачи"),
    ("офис", "офиса"),
];

const CLIENTS: [&str; 16] = [
    "Анна Сергеевна",
    "Игорь",
    "Ольга Петровна",
    "Дмитрий",
    "Елена",
    "Сергей Викторович",
    "Наталья",
    "Алексей",
    "Татьяна Ивановна",
    "Максим",
    "Ирина",
    "Владимир Николаевич",
    "Юлия",
    "Артём",
    "Светлана",
    "Павел Андреевич",
];

const STREETS: [&str; 10] = [
    "Ленина",
    "Гагарина",
    "Мира",
    "Советская",
    "Пушкина",
    "Садовая",
    "Лесная",
    "Школьная",
    "Молодёжная",
    "Набережная",
];

const WEEKDAYS: [&str; 6] = [
    "понедельник",
    "вторник",
    "среду",
    "четверг",
    "пятницу",
    "субботу",
];

const MONTHS: [&str; 6] = ["сентябре", "октябре", "ноябре", "марте", "апреле", "мае"];

/// A call of `manager` (first name) with the given stages done.
pub fn dialogue(rng: &mut StdRng, manager: &str, outgoing: bool, done: [bool; 8]) -> Dialogue {
    let mut lines = Vec::new();
    let mut proof = [None; 8];
    let say = |lines: &mut Vec<Line>, manager: bool, text: String| {
        lines.push(Line { manager, text });
        lines.len() - 1
    };
    let client = pick(rng, &CLIENTS);
    let (product, product_ins) = PRODUCTS[rng.gen_range(0..PRODUCTS.len())];
    let (object, object_gen) = OBJECTS[rng.gen_range(0..OBJECTS.len())];
    let windows = rng.gen_range(1..=9);
    let budget = 20 * rng.gen_range(2..=15);
    let discount = pick(rng, &["пять", "семь", "десять", "пятнадцать"]);
    let month = pick(rng, &MONTHS);

    // Opening: greeting and the company, or neither.
    let greeting = if done[0] {
        pick(
            rng,
            &[
                "Добрый день!",
                "Здравствуйте!",
                "Доброе утро!",
                "Добрый вечер!",
            ],
        )
    } else {
        pick(rng, &["Алло.", "Да.", "Слушаю."])
    };
    let company = if done[1] {
        if outgoing {
            format!(
                "{}, это {manager} из компании «Окна Века», вы оставляли заявку на сайте.",
                client
            )
        } else {
            format!(
                "{} {manager}. {}",
                pick(
                    rng,
                    &[
                        "Компания «Окна Века», меня зовут",
                        "Вы позвонили в «Окна Века», менеджер",
                        "«Окна Века», отдел продаж,"
                    ]
                ),
                pick(
                    rng,
                    &[
                        "Чем могу помочь?",
                        "Чем могу быть полезен?",
                        "Слушаю вас внимательно."
                    ]
                )
            )
        }
    } else if outgoing {
        "Вы нам заявку оставляли, звоню по ней.".to_owned()
    } else {
        pick(rng, &["Говорите.", "Слушаю вас.", "Что хотели?"]).to_owned()
    };
    let first = say(&mut lines, true, format!("{greeting} {company}"));
    if done[0] {
        proof[0] = Some(first);
    }
    if done[1] {
        proof[1] = Some(first);
    }
    let opening = if outgoing {
        pick(
            rng,
            &[
                "Да, здравствуйте, оставляла, жду вашего звонка.",
                "Да, было дело, слушаю вас.",
                "Ой, а я уже и забыла, да, оставляла заявку на прошлой неделе.",
            ],
        )
        .to_owned()
    } else {
        match rng.gen_range(0..3) {
            0 => format!("Здравствуйте, я хотел бы узнать цены на {product} для {object_gen}."),
            1 => format!("Добрый день. Мне нужно поменять {product}, сколько это примерно будет стоить?"),
            _ => format!("Здравствуйте, подскажите, вы занимаетесь {product_ins}? Нам для {object_gen} нужно."),
        }
    };
    say(&mut lines, false, opening);
    if outgoing {
        say(
            &mut lines,
            true,
            format!("Вы спрашивали про {product} для {object_gen}, верно?"),
        );
        say(
            &mut lines,
            false,
            pick(
                rng,
                &["Да, всё верно.", "Да, именно так.", "Ну да, примерно так."],
            )
            .to_owned(),
        );
    }

    // Needs: questions and answers, or a guess at the price.
    if done[2] {
        let questions = [
            "Подскажите, пожалуйста, сколько у вас окон и какого они примерно размера?",
            "А какой у вас дом — панельный, кирпичный или монолит? И какой этаж?",
            "Что для вас сейчас важнее всего — тепло, тишина или цена?",
            "Вы планируете менять всё сразу или по одной комнате?",
            "Когда вам было бы удобно начать работы?",
            "Старые окна деревянные или уже пластик стоит?",
            "Есть ли у вас дети или животные? Тогда посоветую детские замки и москитные сетки.",
        ];
        let answers = [
            format!(
                "Окон {windows}, два больших в комнатах, остальные поменьше, на кухне и в спальне."
            ),
            "Дом кирпичный, девятый этаж, лифт есть.".to_owned(),
            "Главное, чтобы было тепло, зимой сильно дует из всех щелей.".to_owned(),
            format!("Хотелось бы до холодов, желательно в {month}."),
            "Старые деревянные, ещё советские, рассохлись совсем, краска облезла.".to_owned(),
            "Шумно очень, окна выходят на проспект, ночью трамваи спать не дают.".to_owned(),
            format!("Бюджет примерно {budget} тысяч рублей, больше не хотелось бы тратить."),
        ];
        let asked = rng.gen_range(2..=4);
        let start = rng.gen_range(0..questions.len());
        for n in 0..asked {
            let k = (start + n * 3) % questions.len();
            let line = say(&mut lines, true, questions[k].to_owned());
            proof[2].get_or_insert(line);
            say(
                &mut lines,
                false,
                answers[(k + rng.gen_range(0..2)) % answers.len()].clone(),
            );
            if rng.gen_bool(0.4) {
                say(
                    &mut lines,
                    true,
                    pick(
                        rng,
                        &["Угу, понял вас.", "Так, записываю.", "Хорошо, это важно."],
                    )
                    .to_owned(),
                );
            }
        }
    } else {
        say(
            &mut lines,
            true,
            "Ну смотрите, цена зависит от размеров, так сразу сказать сложно.".to_owned(),
        );
        say(&mut lines, false, "А хотя бы примерно?".to_owned());
    }

    // Presentation.
    if done[3] {
        let pool = [
            "Мы ставим профиль немецкого производства, пятикамерный, с двухкамерным стеклопакетом — это тепло и тишина.",
            "Монтаж делаем своими бригадами по ГОСТу, гарантия на работы пять лет, на профиль — десять.",
            "Для шумной стороны рекомендую стеклопакет с триплексом, он заметно гасит шум от дороги.",
            "Фурнитура у нас австрийская, с микропроветриванием и защитой от взлома.",
            "Откосы и подоконники делаем в тот же день, мусор вывозим сами.",
        ];
        let first = rng.gen_range(0..pool.len());
        let line = say(&mut lines, true, pool[first].to_owned());
        proof[3] = Some(line);
        say(&mut lines, true, pool[(first + 2) % pool.len()].to_owned());
        say(
            &mut lines,
            true,
            format!(
                "Для {object_gen} с {windows} окнами выйдет примерно {} тысяч рублей, и сейчас действует скидка {discount} процентов до конца месяца.",
                budget + 10 * rng.gen_range(0..4)
            ),
        );
    } else {
        say(
            &mut lines,
            true,
            format!(
                "Ну окна как окна, стандартные, все такие ставят. Цена от {budget} тысяч, точнее после расчёта."
            ),
        );
    }
    say(
        &mut lines,
        false,
        pick(
            rng,
            &[
                "Понятно.",
                "Угу, ясно.",
                "А сколько по времени займёт установка?",
                "А гарантия какая?",
            ],
        )
        .to_owned(),
    );

    // Questions about the order, in a different mix on every call.
    let floor = rng.gen_range(2..=16);
    let days = rng.gen_range(7..=14);
    let details: [(bool, String, String); 13] = [
        (false, "А сколько по времени займёт установка?".into(),
         "Одно окно ставим примерно за два часа, всю квартиру — за один день, без грязи и пыли.".into()),
        (false, "А подоконники тоже меняете? У нас старые, треснули.".into(),
         "Да, подоконники меняем, есть белые, под мрамор и под дерево, ширину подберём на замере.".into()),
        (false, "Как у вас с оплатой — сразу всё или частями?".into(),
         "Предоплата тридцать процентов при заключении договора, остальное после монтажа.".into()),
        (false, "А зимой вы устанавливаете? Не будет потом дуть?".into(),
         "Устанавливаем круглый год, до минус пятнадцати, используем зимнюю монтажную пену.".into()),
        (false, "А москитные сетки входят в стоимость?".into(),
         "Сетки на все открывающиеся створки идут в подарок при заказе до конца месяца.".into()),
        (false, "Сколько ждать после замера?".into(),
         format!("Изготовление занимает {days} рабочих дней, потом согласуем удобную дату монтажа.")),
        (false, "А старые окна вы сами демонтируете и вывезете?".into(),
         "Да, демонтаж и вывоз старых рам входят в стоимость, вам ничего делать не нужно.".into()),
        (false, format!("Мы на {floor} этаже, это не проблема?"),
         "Нет, у нас есть промышленные альпинисты и подъёмник, работаем на любой высоте.".into()),
        (false, "А договор вы заключаете? Какие документы нужны?".into(),
         "Да, заключаем договор, нужен только паспорт, всё оформим прямо на замере.".into()),
        (false, "Мне соседи ставили у вас окна в прошлом году, хвалили.".into(),
         "Спасибо, приятно слышать! Значит, вы уже видели наши окна вживую.".into()),
        (false, "А в выходные замерщик может приехать?".into(),
         "Да, замерщики работают и в субботу, и в воскресенье с десяти до шести.".into()),
        (true, "Кстати, у вас окна на солнечную сторону? Можем поставить мультифункциональный стеклопакет, летом будет прохладнее.".into(),
         "Да, на юг, летом жара страшная, кондиционер не спасает.".into()),
        (false, "А есть что-то подешевле, эконом-вариант?".into(),
         "Есть профиль эконом-класса, он на двадцать процентов дешевле, но зимой будет чуть холоднее.".into()),
    ];
    let first = rng.gen_range(0..details.len());
    let step = [1, 3, 5, 7][rng.gen_range(0..4)];
    for n in 0..rng.gen_range(3..=6) {
        let (manager_asks, question, answer) = &details[(first + n * step) % details.len()];
        say(&mut lines, *manager_asks, question.clone());
        say(&mut lines, !*manager_asks, answer.clone());
    }

    // An objection, handled or not.
    if rng.gen_bool(0.85) {
        let kind = match rng.gen_range(0..100) {
            0..=1 => 5,
            2..=13 => 1,
            n => [0, 2, 3, 4][n as usize % 4],
        };
        let objection = match kind {
            0 => "Честно говоря, дороговато. В другой компании мне называли дешевле.".to_owned(),
            1 => "А можно оплатить в рассрочку? Сразу всю сумму отдать сложно.".to_owned(),
            2 => "Мне нужно посоветоваться с мужем, я пока не готова решать.".to_owned(),
            3 => format!("А быстрее никак? Мне нужно успеть до холодов, в {month} уже поздно."),
            4 => "А вы точно сами устанавливаете, не через субподрядчиков?".to_owned(),
            _ => {
                "А ламинацию под дуб вы делаете? Хочу, чтобы окна были под цвет мебели.".to_owned()
            }
        };
        say(&mut lines, false, objection);
        let answer = if done[4] {
            match kind {
                0 => "Понимаю вас. Давайте сравним: у нас в цену уже входят монтаж, откосы и вывоз мусора, а многие считают их отдельно.",
                1 => "Да, конечно, есть беспроцентная рассрочка на двенадцать месяцев без первого взноса, оформляется прямо на замере.",
                2 => "Конечно, это важное решение. Давайте я пришлю расчёт на почту, чтобы вы вместе спокойно посмотрели.",
                3 => "Производство у нас занимает десять рабочих дней, монтаж — один день, так что успеем с запасом.",
                4 => "Да, у нас свои бригады в штате, мастера работают больше пяти лет, все документы покажем на замере.",
                _ => "Да, делаем ламинацию в любом цвете из каталога, срок изготовления тот же.",
            }
        } else {
            match kind {
                0 => "Ну это уже ваше дело, дешевле нормального качества вы не найдёте.",
                1 => "Не знаю, это вам в бухгалтерии скажут, я такими вопросами не занимаюсь.",
                2 => "Ну думайте, конечно.",
                3 => "Раньше никак, у нас очередь.",
                4 => "Ну какая вам разница, кто ставит.",
                _ => "Не знаю, вроде делаем, надо уточнить.",
            }
        };
        let line = say(&mut lines, true, answer.to_owned());
        if done[4] {
            proof[4] = Some(line);
        }
        say(
            &mut lines,
            false,
            pick(
                rng,
                &[
                    "Ну хорошо.",
                    "Ладно, понятно.",
                    "Хм, ну допустим.",
                    "Да, это удобно.",
                ],
            )
            .to_owned(),
        );
    } else if done[4] {
        let line = say(
            &mut lines,
            true,
            "Если остались сомнения по цене или срокам — спрашивайте, всё объясню.".to_owned(),
        );
        proof[4] = Some(line);
        say(&mut lines, false, "Нет, всё понятно.".to_owned());
    }

    // The measurement and the next step.
    let mut booked = false;
    if done[5] {
        let line = say(
            &mut lines,
            true,
            pick(
                rng,
                &[
                    "Давайте я запишу вас на бесплатный замер — мастер приедет, всё измерит и сделает точный расчёт.",
                    "Предлагаю бесплатный выезд замерщика, это ни к чему не обязывает.",
                    "Лучше всего сделать бесплатный замер, тогда цена будет точной до рубля.",
                ],
            )
            .to_owned(),
        );
        proof[5] = Some(line);
        say(
            &mut lines,
            false,
            pick(
                rng,
                &[
                    "Давайте, а когда можно?",
                    "Хорошо, а это точно бесплатно?",
                    "Можно, да.",
                ],
            )
            .to_owned(),
        );
    }
    if done[6] {
        let hour = rng.gen_range(9..=17);
        let line = say(
            &mut lines,
            true,
            format!(
                "Отлично, записываю вас на {} с {hour} до {}, замерщик позвонит за час до приезда. Адрес продиктуете?",
                pick(rng, &WEEKDAYS),
                hour + 2
            ),
        );
        proof[6] = Some(line);
        say(
            &mut lines,
            false,
            format!(
                "Улица {}, дом {}, квартира {}.",
                pick(rng, &STREETS),
                rng.gen_range(1..120),
                rng.gen_range(1..300)
            ),
        );
        say(
            &mut lines,
            true,
            "Записал. Я также отправлю вам сообщение с подтверждением и расчётом.".to_owned(),
        );
        booked = done[5];
    } else {
        say(
            &mut lines,
            true,
            pick(
                rng,
                &[
                    "Хорошо, тогда созвонимся как-нибудь.",
                    "Если надумаете, звоните.",
                ],
            )
            .to_owned(),
        );
    }

    // Goodbye.
    let last = if done[7] {
        pick(
            rng,
            &[
                "Спасибо, что обратились в «Окна Века»! Хорошего вам дня, до свидания.",
                "Всего доброго, ждём вас! До свидания.",
                "Спасибо за звонок, до свидания!",
            ],
        )
    } else {
        pick(rng, &["Ага, давайте.", "Всё, пока.", "Ну всё тогда."])
    };
    let line = say(&mut lines, true, last.to_owned());
    if done[7] {
        proof[7] = Some(line);
    }
    say(
        &mut lines,
        false,
        pick(
            rng,
            &[
                "Спасибо, до свидания.",
                "Хорошо, жду звонка.",
                "До свидания.",
            ],
        )
        .to_owned(),
    );

    Dialogue {
        lines,
        proof,
        booked,
        windows,
        object,
        budget,
    }
}
