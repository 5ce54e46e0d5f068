//! Measures the local model on this machine: reading a ~600-token prompt,
//! writing an answer, and reading it again with the transcript cached.
//!
//! `cargo run --release -p rop-llm --example local_speed -- MODEL.gguf [THREADS]`

use rop_llm::{LanguageModel, LocalLlama, LocalLlamaConfig, Prompt};
use serde_json::json;

const TURNS: &[(&str, &str)] = &[
    ("Менеджер", "Добрый день! Меня зовут Ольга, компания «Окна Плюс». Удобно говорить?"),
    ("Клиент", "Здравствуйте, да, удобно. Мы оставляли заявку на сайте."),
    ("Менеджер", "Отлично. Расскажите, пожалуйста, что вы хотите заменить: окна в квартире, в доме или в офисе?"),
    ("Клиент", "В офисе. У нас восемь окон, старые деревянные рамы, зимой сильно дует."),
    ("Менеджер", "Понимаю. А какие окна по размеру, примерно? Стандартные или есть большие витражи?"),
    ("Клиент", "Шесть стандартных и два больших, почти до пола, в переговорной."),
    ("Менеджер", "Хорошо. Какой бюджет вы закладываете на замену?"),
    ("Клиент", "Около трёхсот тысяч рублей, может чуть больше, если будет хорошее качество."),
    ("Менеджер", "Кто у вас принимает решение по закупке — вы или руководитель?"),
    ("Клиент", "Решает директор, но он доверяет моему мнению."),
    ("Менеджер", "Понятно. Когда вам нужно закончить работы?"),
    ("Клиент", "Хотелось бы до начала отопительного сезона, то есть до октября."),
    ("Менеджер", "Успеем. Предлагаю бесплатный выезд замерщика в четверг в десять утра. Подходит?"),
    ("Клиент", "Да, четверг подходит. Адрес вам отправить?"),
    ("Менеджер", "Да, пришлите, пожалуйста, на почту. Я подготовлю два варианта: эконом и с энергосберегающим стеклопакетом."),
    ("Клиент", "А сколько стоит энергосберегающий вариант?"),
    ("Менеджер", "Примерно на пятнадцать процентов дороже, но он окупается за пару зим на отоплении."),
    ("Клиент", "Интересно, посмотрим. Спасибо."),
    ("Менеджер", "Спасибо вам! Жду адрес, до встречи в четверг."),
];

fn dialogue() -> String {
    TURNS
        .iter()
        .map(|(who, text)| format!("{who}: {text}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: local_speed MODEL.gguf [THREADS]");
    let mut config = LocalLlamaConfig::new(path);
    if let Some(threads) = args.next() {
        config.threads = threads.parse().unwrap();
    }
    config.context_tokens = 4096;
    let started = std::time::Instant::now();
    let llm = LocalLlama::load(config).unwrap();
    println!("loaded in {:.2} s", started.elapsed().as_secs_f64());

    let fields = Prompt {
        system: "Ты проверяешь записи звонков отдела продаж. Отвечай только JSON.".into(),
        context: format!("Расшифровка звонка:\n{}", dialogue()),
        task: "Заполни поля: manager_name — имя менеджера; budget — бюджет клиента в рублях \
               числом; decision_maker — кто принимает решение; next_step — о чём договорились."
            .into(),
        schema: json!({
            "type": "object",
            "properties": {
                "manager_name": {"type": ["string", "null"]},
                "budget": {"type": ["integer", "null"]},
                "decision_maker": {"type": ["string", "null"]},
                "next_step": {"type": ["string", "null"], "maxLength": 120},
            },
            "required": ["manager_name", "budget", "decision_maker", "next_step"],
            "additionalProperties": false,
        }),
        schema_name: "fields".into(),
        max_tokens: 128,
    };
    let stage = Prompt {
        task: "Этап «выявление потребности»: задавал ли менеджер вопросы о потребностях клиента? \
               Сначала приведи цитату, потом вердикт."
            .into(),
        schema: json!({
            "type": "object",
            "properties": {
                "quote": {"type": "string", "maxLength": 200},
                "done": {"type": "boolean"},
            },
            "required": ["quote", "done"],
            "additionalProperties": false,
        }),
        schema_name: "stage".into(),
        ..fields.clone()
    };
    for (name, prompt) in [
        ("fields, fresh", &fields),
        ("stage, cached", &stage),
        ("fields, cached", &fields),
    ] {
        let c = llm.complete(prompt).await.unwrap();
        let read = c.prompt_tokens - c.cached_tokens;
        println!(
            "{name}: {} prompt tokens ({} cached, {read} read in {:.2} s = {:.1}/s); \
             {} written in {:.2} s = {:.1}/s\n  {}",
            c.prompt_tokens,
            c.cached_tokens,
            c.prompt_secs,
            f64::from(read) / c.prompt_secs,
            c.completion_tokens,
            c.generation_secs,
            f64::from(c.completion_tokens) / c.generation_secs,
            c.text
        );
    }
}
