# Counts words in the text passed as arguments.text; prints the result as JSON.
count_words() {
  python3 -c 'import json,sys; text=json.load(sys.stdin)["text"]; words=text.split(); print(json.dumps({"words": len(words), "unique": len(set(w.lower() for w in words))}))'
}
