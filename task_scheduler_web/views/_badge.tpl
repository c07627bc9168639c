<span class="badge b-{{status}}">{{status}}</span>
