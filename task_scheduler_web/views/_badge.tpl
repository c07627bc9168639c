<span class="badge b-{{status}}">{{h['word'](kind if defined('kind') else 'status', status)}}</span>
